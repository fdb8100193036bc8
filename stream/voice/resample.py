"""Audio frames of any format, layout, rate and size to mono float32 at one rate."""

from __future__ import annotations

import av
import numpy as np

from stream.core.types import F32


class Resampler:
    """Converts PyAV audio frames of any format, layout, rate and size to mono float32.

    Channels are averaged (libswresample's own downmix scales a duplicated-mono stereo
    stream by sqrt(2), +3 dB, which would make live audio louder than the same file).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._r: av.AudioResampler | None = None
        self._layout = ""

    def __call__(self, frame: av.AudioFrame | None) -> F32:
        if frame is not None:
            frame.pts = None  # timing is ours; live pts may jump
            layout = frame.layout.name
            if self._r is None or layout != self._layout:
                # A layout change mid-stream flushes the old resampler first.
                pending = self._drain(None) if self._r is not None else []
                self._r = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
                self._layout = layout
                return np.concatenate([*pending, *self._drain(frame)]).astype(np.float32)
        if self._r is None:
            return np.zeros(0, np.float32)
        out = self._drain(frame)
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _drain(self, frame: av.AudioFrame | None) -> list[F32]:
        assert self._r is not None
        return [f.to_ndarray().mean(axis=0).astype(np.float32) for f in self._r.resample(frame)]


def array_frame(samples: F32, rate: int) -> av.AudioFrame:
    """Wrap mono float32 samples in a PyAV frame."""
    f = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, np.float32)[None, :], "flt", "mono"
    )
    f.sample_rate = rate
    return f
