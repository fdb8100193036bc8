"""Reading videos and images: PyAV for any container/codec ffmpeg reads, OpenCV for stills."""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import warnings as _warnings
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

#: Largest image or video frame decoded as it is, in pixels (50 MP: above 8K UHD's 33 MP). A
#: 20000x20000 PNG of a few hundred KB would otherwise take gigabytes to decode: images above
#: the limit are refused before decoding, video frames are scaled down to it.
MAX_PIXELS = 50_000_000

#: Frames larger than this are decoded by FFmpeg's frame threads; smaller ones in the decoding
#: thread alone, which runs ahead of the analysis anyway (`prefetched`). Measured on H.264 to
#: BGR: 640x360 takes 1.1 ms a frame alone and 2.1 ms (2.9 ms CPU) with frame threads, which
#: also hold ~5 MiB of buffers; 1920x1080 takes 6.4 ms alone and 4.6 ms with them.
FRAME_THREADS_MIN_PIXELS = 1280 * 720


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
    """Refuse, with a message that says why, anything that is not a readable regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(f"{path}: symbolic link loop (a link points back to itself)") from None
        if exc.errno == errno.ENOENT:
            if os.path.islink(path):
                raise MediaError(f"{path}: broken symbolic link (its target is missing)") from None
            raise MediaError(f"{path}: file not found") from None
        if exc.errno == errno.EACCES:
            raise MediaError(f"{path}: permission denied") from None
        raise MediaError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{path}: is a folder, not a media file")
    if stat.S_ISFIFO(st.st_mode):
        raise MediaError(f"{path}: is a pipe (FIFO), not a media file: save the stream to a file")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        raise MediaError(f"{path}: is a device, not a media file")
    if stat.S_ISSOCK(st.st_mode):
        raise MediaError(f"{path}: is a socket, not a media file")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise MediaError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: permission denied")


def _header_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, JPEG, GIF, BMP or WebP header, without decoding."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        w, h = struct.unpack("<HH", head[6:10])
        return int(w), int(h)
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(int(w)), abs(int(h))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            w = int.from_bytes(head[24:27], "little") + 1
            h = int.from_bytes(head[27:30], "little") + 1
            return w, h
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return int(w) & 0x3FFF, int(h) & 0x3FFF
        if kind == b"VP8L" and len(head) >= 25:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if head[:2] == b"\xff\xd8":  # JPEG: the first start-of-frame marker holds the size
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = int.from_bytes(head[i + 2 : i + 4], "big")
            if marker in range(0xC0, 0xD0) and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    return None


def image_size(path: Path, data: bytes) -> tuple[int, int] | None:
    """An image's width and height read from its header (None when unknown)."""
    size = _header_size(data[: 1 << 16]) if data[:2] != b"\xff\xd8" else _header_size(data)
    if size is not None:
        return size
    # Other formats (TIFF, PNM...): Pillow (a dependency of matplotlib) reads the header
    # without decoding the pixels.
    from PIL import Image

    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                return int(w), int(h)
    except Image.DecompressionBombError:
        big = 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        return big, 1  # over Pillow's own bomb limit: far over ours
    except Exception:  # a format Pillow does not know: OpenCV decides
        return None


def _too_large(path: Path, what: str, w: int, h: int, max_pixels: int) -> MediaError:
    return MediaError(
        f"{path}: {what} is {w}x{h} px ({w * h / 1e6:.0f} MP), above the limit of "
        f"{max_pixels / 1e6:.0f} MP (analyze.max_pixels): scale it down first"
    )


def _read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    size = image_size(path, data.tobytes())
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(path, "image", size[0], size[1], max_pixels)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{path}: not an image OpenCV can decode (corrupt or not an image)")
    return np.ascontiguousarray(img)


_IMAGE_CODECS = {"png", "mjpeg", "bmp", "gif", "webp", "tiff", "ppm", "pgm", "pam", "jpeg2000"}


def _open(path: Path) -> Any:
    """Open a container with PyAV, or raise one clear MediaError."""
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        msg = f"{path}: not a media file ffmpeg can read, or truncated ({exc})"
        raise MediaError(msg) from None


def probe(path: Path, max_pixels: int = MAX_PIXELS) -> MediaInfo:
    """Describe a media file.

    Args:
        path: the file.
        max_pixels: largest image or video frame accepted (`MAX_PIXELS` by default).

    Raises:
        MediaError: missing, empty, not a regular file, not media, without a video stream, or
            with images or frames above `max_pixels`.
    """
    _check_path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = _read_image(path, max_pixels)
        return MediaInfo(path, "image", img.shape[1], img.shape[0], 0.0, 0.0, "image", False)
    with path.open("rb") as fh:  # an image under another name: its header tells its size
        size = _header_size(fh.read(1 << 16))
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(path, "image", size[0], size[1], max_pixels)
    with _open(path) as container:
        info = _stream_info(container, path)
    if info.width * info.height > max_pixels:
        what = "image" if info.duration == 0 or info.codec in _IMAGE_CODECS else "video frame"
        raise _too_large(path, what, info.width, info.height, max_pixels)
    return info


# A presentation time that steps back by more than this is a timestamp restart (concatenated
# MPEG-TS, spliced recordings), not B-frame reordering jitter.
RESTART_S = 0.25


def read_frames(
    path: Path, fps: float, warnings: list[str] | None = None, max_pixels: int = MAX_PIXELS
) -> Iterator[VideoFrame]:
    """Yield frames sampled at about `fps` per second of media time (all frames if fps <= 0).

    Timestamps come from each frame's pts, so variable frame rate is handled; an image yields
    one frame at t = 0. Where the timestamps restart (two recordings concatenated), media time
    continues across the jump one frame after the last, and a line is appended to `warnings`.

    Raises:
        MediaError: the file cannot be opened, its images or frames are above `max_pixels`, or
            decoding fails part-way (frames decoded before the failure have been yielded).
    """
    info = probe(path, max_pixels)
    if info.kind == "image":
        yield VideoFrame(_read_image(path, max_pixels), 0.0, 0)
        return
    grid = FrameGrid(fps)
    last_t = 0.0
    shift = 0.0  # added to the file's times after each restart
    restarts: list[float] = []
    index = -1
    with _open(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO" if info.width * info.height > FRAME_THREADS_MIN_PIXELS else "NONE"
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
                if frame.width * frame.height > max_pixels:  # the size changed mid-stream
                    raise _too_large(path, "video frame", frame.width, frame.height, max_pixels)
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
