"""Builds test videos from real clips: tiles of single-face clips with their own speech."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from .conftest import VIDEO

RATE = 48_000
Tile = tuple[str, tuple[int, int, int], tuple[float, float] | None]


def clip_audio(name: str, span: tuple[float, float] | None = None) -> npt.NDArray[np.float32]:
    """A clip's audio track (or the `span` of it, in seconds) as 48 kHz mono float32."""
    r = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = []
    with av.open(str(VIDEO / name)) as c:
        for frame in c.decode(audio=0):
            frame.pts = None
            out += [f.to_ndarray().reshape(-1) for f in r.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in r.resample(None)]
    audio = np.concatenate(out).astype(np.float32)
    if span is not None:
        audio = audio[int(span[0] * RATE) : int(span[1] * RATE)]
    return audio * np.float32(0.05 / max(float(np.sqrt(np.mean(audio**2))), 1e-6))  # equal level


def clip_frames(
    name: str, fps: int, span: tuple[float, float] | None = None
) -> tuple[list[npt.NDArray[np.uint8]], float]:
    """Frames of a clip (or of its `span`) resampled to `fps`, and their duration."""
    with av.open(str(VIDEO / name)) as c:
        frames = [(float(f.time or 0.0), f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]
    start, end = span or (0.0, frames[-1][0] + (frames[-1][0] - frames[-2][0]))
    times = [f[0] for f in frames]
    out = []
    for i in range(int((end - start) * fps)):
        j = max(0, int(np.searchsorted(times, start + i / fps, side="right")) - 1)
        out.append(np.asarray(frames[j][1], np.uint8))
    return out, end - start


def square_tile(
    img: npt.NDArray[np.uint8], square: tuple[int, int, int], side: int
) -> npt.NDArray[np.uint8]:
    x, y, s = square
    return np.asarray(
        cv2.resize(img[y : y + s, x : x + s], (side, side), interpolation=cv2.INTER_AREA), np.uint8
    )


def _mix(
    sources: dict[str, npt.NDArray[np.float32]], segments: list[tuple[float, float, str]]
) -> npt.NDArray[np.float32]:
    """Each segment's source looped over its (start, end); silence elsewhere."""
    total = max(e for _, e, _ in segments)
    n_audio = int(total * RATE)
    mix = np.zeros(n_audio, np.float32)
    t = np.arange(n_audio) / RATE
    for start, end, key in segments:
        audio = sources[key]
        idx = ((t % (len(audio) / RATE)) * RATE).astype(np.int64) % len(audio)
        gate = (t >= start) & (t < end)
        mix[gate] = audio[idx[gate]]
    return mix


def _write(
    path: Path,
    frame: Callable[[int], npt.NDArray[np.uint8]],
    n_frames: int,
    mix: npt.NDArray[np.float32],
    fps: int,
) -> None:
    """An H.264 + AAC file of `n_frames` frames (`frame(i)`, BGR) and the mono `mix`."""
    h, w = frame(0).shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = Fraction(1, fps)
        aus = out.add_stream("aac", rate=RATE)
        aus.layout = "mono"
        for i in range(n_frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame(i)), format="bgr24")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        step = 1024
        for i in range(0, len(mix), step):
            af = av.AudioFrame.from_ndarray(mix[None, i : i + step], format="flt", layout="mono")
            af.sample_rate = RATE
            af.pts = i
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)


def two_speaker_video(
    path: Path,
    left: Tile,
    right: Tile,
    segments: list[tuple[float, float, str]],
    fps: int = 25,
    side: int = 320,
) -> None:
    """Side-by-side tiles that both keep playing; only one tile's own audio is heard at a time.

    Args:
        left, right: clip name, the square (x, y, side) cut around its speaker's face, and the
            span of the clip to loop (None: all of it).
        segments: (start, end, "left" | "right") whose audio is heard; silence elsewhere.
    """
    tiles = {}
    audio = {}
    for key, (name, sq, span) in (("left", left), ("right", right)):
        frames, _dur = clip_frames(name, fps, span)
        tiles[key] = [square_tile(f, sq, side) for f in frames]
        audio[key] = clip_audio(name, span)
    total = max(e for _, e, _ in segments)

    def frame(i: int) -> npt.NDArray[np.uint8]:
        return np.concatenate([tiles[k][i % len(tiles[k])] for k in ("left", "right")], axis=1)

    _write(path, frame, int(total * fps), _mix(audio, segments), fps)


def talker_and_photo_video(
    path: Path,
    talker: Tile,
    photo: Path,
    off_screen: tuple[str, tuple[float, float]],
    segments: list[tuple[float, float, str]],
    fps: int = 25,
    side: int = 320,
) -> None:
    """A talking clip (left) beside a still photo (right) that breathes like a webcam picture:
    slow zoom, tilt, drift and gain, and sensor noise (sigma 3 grey levels) on every frame.

    Args:
        talker: clip name, square around the face, span to loop; its audio is "left".
        photo: the photo (its centred square is used).
        off_screen: (clip name, span) of a voice nobody in the picture has: "off".
        segments: (start, end, "left" | "off") whose audio is heard; silence elsewhere.
    """
    name, sq, span = talker
    frames, _dur = clip_frames(name, fps, span)
    left = [square_tile(f, sq, side) for f in frames]
    read = cv2.imread(str(photo))
    assert read is not None, f"cannot read {photo}"
    img = np.asarray(read, np.uint8)
    h, w = img.shape[:2]
    s = min(h, w)
    still = square_tile(img, ((w - s) // 2, (h - s) // 2, s), side)
    rng = np.random.default_rng(0)
    audio = {"left": clip_audio(name, span), "off": clip_audio(*off_screen)}
    total = max(e for _, e, _ in segments)

    def frame(i: int) -> npt.NDArray[np.uint8]:
        t = i / fps
        m = cv2.getRotationMatrix2D(
            (side / 2, side / 2),
            3.0 * np.sin(2 * np.pi * t / 4.1),
            1 + 0.06 * np.sin(2 * np.pi * t / 3.7),
        )
        m[0, 2] += 0.05 * side * np.sin(2 * np.pi * t / 2.9)
        p = cv2.warpAffine(still, m, (side, side), borderMode=cv2.BORDER_REFLECT)
        gain = 1 + 0.12 * np.sin(2 * np.pi * t / 5.3)
        noisy = p.astype(np.float32) * gain + rng.normal(0, 3, p.shape)
        p = np.clip(noisy, 0, 255).astype(np.uint8)
        return np.concatenate([left[i % len(left)], p], axis=1)

    _write(path, frame, int(total * fps), _mix(audio, segments), fps)
