"""Streaming voice activity with Silero VAD v6: 16 kHz audio in, speech segments out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.core.types import F32

CHUNK = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64


@dataclass(frozen=True)
class VadStep:
    """One 32 ms chunk: its start time, the model's speech probability and the decision."""

    t: float
    prob: float
    speech: bool


class SileroVad:
    """Silero VAD with its recurrent state kept per stream, plus hysteresis and hangover.

    Speech starts when the probability reaches `on` and ends only after it stayed below `off`
    for `hangover_s`, so pauses between words do not chop speech apart.

    Args:
        session: ONNX Runtime session of silero_vad_v6 (shared between streams).
    """

    def __init__(
        self,
        session: Any,
        on: float = 0.5,
        off: float = 0.35,
        hangover_s: float = 0.25,
    ) -> None:
        self.session = session
        self.on, self.off, self.hangover_s = on, off, hangover_s
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._sr = np.array(16000, dtype=np.int64)
        self._t = 0.0
        self._speech = False
        self._quiet_since = 0.0

    def process(
        self, samples: F32, foreground: Callable[[float], bool] | None = None
    ) -> list[VadStep]:
        """Feed 16 kHz samples (any count); returns one step per completed 32 ms chunk.

        `foreground(t)` (optional) says whether the chunk ending at stream time t is foreground
        sound; where it is not, speech neither starts nor holds (the probability is kept).
        """
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = len(buf) // CHUNK
        steps = []
        for i in range(n):
            chunk = buf[i * CHUNK : (i + 1) * CHUNK]
            x = np.concatenate([self._context, chunk])[None, :]
            out, self._state = self.session.run(
                None, {"input": x, "state": self._state, "sr": self._sr}
            )
            self._context = chunk[-CONTEXT:]
            prob = float(np.asarray(out).ravel()[0])
            fg = foreground is None or foreground(self._t + CHUNK / 16000)
            steps.append(VadStep(self._t, prob, self._decide(prob if fg else 0.0)))
            self._t += CHUNK / 16000
        self._pending = buf[n * CHUNK :].copy()
        return steps

    @property
    def speaking(self) -> bool:
        """The current decision (speech started and not yet ended)."""
        return self._speech

    def _decide(self, prob: float) -> bool:
        if prob >= self.on:
            self._speech = True
            self._quiet_since = -1.0
        elif self._speech and prob < self.off:
            if self._quiet_since < 0:
                self._quiet_since = self._t
            if self._t + CHUNK / 16000 - self._quiet_since >= self.hangover_s:
                self._speech = False
        elif self._speech:
            self._quiet_since = -1.0
        return self._speech
