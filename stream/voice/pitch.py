"""Pitch (f0) and voicing confidence with CREPE tiny on 16 kHz audio."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.core.types import F32

FRAME = 1024
_CENTS = 1997.3794084376191 + 20.0 * np.arange(360)


def activation_to_f0(act: F32) -> tuple[F32, F32]:
    """Decode CREPE activations [N, 360] into f0 in Hz and confidence (max activation).

    The pitch is the activation-weighted mean of the cents within ±4 bins of the peak.
    """
    peak = act.argmax(axis=1)
    conf = act.max(axis=1).astype(np.float32)
    f0 = np.empty(len(act), np.float32)
    for i, p in enumerate(peak):
        lo, hi = max(0, p - 4), min(360, p + 5)
        w = act[i, lo:hi]
        cents = float((w * _CENTS[lo:hi]).sum() / max(float(w.sum()), 1e-9))
        f0[i] = 10.0 * 2.0 ** (cents / 1200.0)
    return f0, conf


class CrepePitch:
    """Streaming pitch estimation: one f0 per `hop_s` of 16 kHz audio (frames centred on hops).

    Args:
        session: ONNX Runtime session of crepe_tiny_pitch (shared between streams).
        hop_s: seconds between estimates (CREPE's own 10 ms is costly; 20-40 ms suits prosody).
    """

    def __init__(self, session: Any, hop_s: float = 0.02) -> None:
        self.session = session
        self.hop = round(hop_s * 16000)
        self._buf = np.zeros(FRAME // 2, np.float32)  # half a frame of silence: centre frame 0
        self._next = 0  # index in _buf of the next frame start
        self._t0 = 0.0  # media time of _buf[FRAME // 2] at start

    def process(self, samples: F32) -> tuple[F32, F32, F32]:
        """Feed 16 kHz samples; returns (times, f0 Hz, confidence) of the completed hops."""
        times, frames = self.frames(samples)
        f0, conf = self.estimate(frames)
        return times, f0, conf

    def frames(self, samples: F32) -> tuple[F32, F32]:
        """Feed 16 kHz samples; returns the completed hops' times and their normalised frames
        [N, 1024], for `estimate` (callers may estimate only the frames they need)."""
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
        starts = []
        while self._next + FRAME <= len(self._buf):
            starts.append(self._next)
            self._next += self.hop
        if not starts:
            return np.zeros(0, np.float32), np.zeros((0, FRAME), np.float32)
        frames = np.stack([self._buf[s : s + FRAME] for s in starts])
        frames = frames - frames.mean(axis=1, keepdims=True)
        frames = frames / np.maximum(frames.std(axis=1, keepdims=True), 1e-8)
        times = self._t0 + np.asarray(starts, np.float32) / 16000.0
        drop = self._next - FRAME // 2 if self._next > FRAME else 0
        if drop > 0:  # keep memory bounded: forget audio no frame will use again
            self._buf = self._buf[drop:]
            self._next -= drop
            self._t0 += drop / 16000.0
        return times.astype(np.float32), frames.astype(np.float32)

    def estimate(self, frames: F32) -> tuple[F32, F32]:
        """f0 (Hz) and confidence of frames from `frames`, in one model call (a frame's result
        does not depend on the others in the batch)."""
        if len(frames) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        act = np.asarray(self.session.run(None, {"frames": frames})[0])
        return activation_to_f0(act)
