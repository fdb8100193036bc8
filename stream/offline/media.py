"""Reading videos and images: PyAV for any container/codec ffmpeg reads, OpenCV for stills."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from stream.core.errors import MediaError
from stream.core.timing import FrameGrid
from stream.core.types import MediaInfo, VideoFrame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def _stream_info(container: Any, path: Path) -> MediaInfo:
    if not container.streams.video:
        if container.streams.audio:
            return _audio_info(container, path)
        raise MediaError(f"{path}: not a video (ffmpeg finds no video or audio stream in it)")
    vs = container.streams.video[0]
    duration = 0.0
    if vs.duration is not None and vs.time_base is not None:
        duration = float(vs.duration * vs.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    rate = vs.average_rate or vs.guessed_rate or Fraction(0)
    return MediaInfo(
        path=path,
        kind="video",
        width=int(vs.codec_context.width or 0),
        height=int(vs.codec_context.height or 0),
        duration=duration,
        fps=float(rate),
        codec=str(vs.codec_context.name),
        has_audio=bool(container.streams.audio),
    )


def _audio_info(container: Any, path: Path) -> MediaInfo:
    """An audio-only file (wav, mp3, m4a, ogg/opus, flac...): kind "audio"."""
    a = container.streams.audio[0]
    duration = 0.0
    if a.duration is not None and a.time_base is not None:
        duration = float(a.duration * a.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return MediaInfo(
        path=path,
        kind="audio",
        width=0,
        height=0,
        duration=duration,
        fps=0.0,
        codec=str(a.codec_context.name),
        has_audio=True,
    )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{path}: not an image OpenCV can decode (corrupt or not an image)")
    return np.ascontiguousarray(img)


def _open(path: Path) -> Any:
    """Open a container with PyAV, or raise one clear MediaError."""
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        msg = f"{path}: not a media file ffmpeg can read, or truncated ({exc})"
        raise MediaError(msg) from None


def probe(path: Path) -> MediaInfo:
    """Describe a media file.

    Raises:
        MediaError: missing, empty, not media, or without a video stream.
    """
    _check_path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = _read_image(path)
        return MediaInfo(path, "image", img.shape[1], img.shape[0], 0.0, 0.0, "image", False)
    with _open(path) as container:
        return _stream_info(container, path)


# A presentation time that steps back by more than this is a timestamp restart (concatenated
# MPEG-TS, spliced recordings), not B-frame reordering jitter.
RESTART_S = 0.25


def read_frames(path: Path, fps: float, warnings: list[str] | None = None) -> Iterator[VideoFrame]:
    """Yield frames sampled at about `fps` per second of media time (all frames if fps <= 0).

    Timestamps come from each frame's pts, so variable frame rate is handled; an image yields
    one frame at t = 0. Where the timestamps restart (two recordings concatenated), media time
    continues across the jump one frame after the last, and a line is appended to `warnings`.

    Raises:
        MediaError: the file cannot be opened, or decoding fails part-way (frames decoded before
            the failure have already been yielded).
    """
    info = probe(path)
    if info.kind == "image":
        yield VideoFrame(_read_image(path), 0.0, 0)
        return
    grid = FrameGrid(fps)
    last_t = 0.0
    shift = 0.0  # added to the file's times after each restart
    restarts: list[float] = []
    index = -1
    with _open(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        start = 0.0
        if vs.start_time is not None and vs.time_base is not None:
            start = float(vs.start_time * vs.time_base)
        base_rate = info.fps or 30.0
        try:
            for frame in container.decode(vs):
                index += 1
                if frame.time is None:
                    t = index / base_rate
                else:
                    t = float(frame.time) - start + shift
                    if index > 0 and t < last_t - RESTART_S:
                        restarts.append(last_t)
                        shift += last_t + 1.0 / base_rate - t
                        t = last_t + 1.0 / base_rate
                last_t = t
                if not grid.take(t):
                    continue
                image = frame.to_ndarray(format="bgr24")
                yield VideoFrame(np.ascontiguousarray(image), t, index)
        except av.error.FFmpegError as exc:
            raise MediaError(
                f"{path}: decoding failed at {last_t:.2f} s (truncated or corrupt file: {exc})"
            ) from None
        finally:
            if restarts:
                at = ", ".join(f"{x:.2f}" for x in restarts[:5])
                note = (
                    f"timestamps restart {len(restarts)} time(s) (at {at} s; concatenated "
                    "recordings?): media time continues across each restart"
                )
                log.warning("%s: %s", path, note)
                if warnings is not None:
                    warnings.append(note)
    if index < 0:
        raise MediaError(f"{path}: the video stream holds no decodable frame (truncated?)")
    if info.duration > 2.0 and last_t - shift < info.duration * 0.9 - 1.0:
        raise MediaError(
            f"{path}: file ends early: decoded up to {last_t:.2f} s of the "
            f"{info.duration:.2f} s the container announces (truncated download?)"
        )


def read_audio(path: Path) -> tuple[float, Iterator[Any]]:
    """The first audio stream's frames, and its start relative to the first video stream.

    Raises:
        MediaError: the file has no audio stream or cannot be read.
    """
    _check_path(path)
    container = _open(path)
    if not container.streams.audio:
        container.close()
        raise MediaError(f"{path}: no audio stream")
    a = container.streams.audio[0]

    def start(s: Any) -> float:
        if s.start_time is None or s.time_base is None:
            return 0.0
        return float(s.start_time * s.time_base)

    offset = start(a) - (start(container.streams.video[0]) if container.streams.video else 0.0)

    def frames() -> Iterator[Any]:
        with container:
            try:
                yield from container.decode(a)
            except av.error.FFmpegError as exc:
                raise MediaError(f"{path}: audio decoding failed ({exc})") from None

    return offset, frames()
