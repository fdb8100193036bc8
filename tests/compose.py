"""Builds test videos from real clips: tiles of single-face clips with their own speech."""

from __future__ import annotations

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
    for key, (name, sq, span) in (("left", left), ("right", right)):
        frames, dur = clip_frames(name, fps, span)
        tiles[key] = ([square_tile(f, sq, side) for f in frames], dur, clip_audio(name, span))
    total = max(e for _, e, _ in segments)
    n_audio = int(total * RATE)
    mix = np.zeros(n_audio, np.float32)
    t = np.arange(n_audio) / RATE
    for start, end, key in segments:
        frames, dur, audio = tiles[key]
        idx = ((t % dur) * RATE).astype(np.int64) % len(audio)
        gate = (t >= start) & (t < end)
        mix[gate] = audio[idx[gate]]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 2 * side, side, "yuv420p"
        vs.time_base = Fraction(1, fps)
        aus = out.add_stream("aac", rate=RATE)
        aus.layout = "mono"
        for i in range(int(total * fps)):
            canvas = np.concatenate(
                [tiles[k][0][i % len(tiles[k][0])] for k in ("left", "right")], axis=1
            )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas), format="bgr24")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        step = 1024
        for i in range(0, n_audio, step):
            chunk = mix[i : i + step]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = RATE
            af.pts = i
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)
