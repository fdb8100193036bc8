"""The live frame budget: how much analysis each frame may get, adapted to measured times
(a `FrameScheduler`, one per video track)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stream.core.config import LiveConfig
from stream.vision.pipeline import FrameResult


@dataclass
class _Ema:
    value: float = 0.0
    seen: bool = False

    def add(self, x: float, alpha: float = 0.2) -> None:
        self.value = x if not self.seen else self.value + alpha * (x - self.value)
        self.seen = True


@dataclass
class FrameBudget:
    """Plans each analysed frame within `budget_utilisation / max_fps` seconds.

    Detection runs every `detect_every` frames (optical flow in between), raised when detection
    plus the due expressions do not fit and lowered again when they do. Each face gets its
    expression updated at `emotion_fps` when the budget allows; when it does not, the faces
    whose expressions are oldest go first (round-robin), at least one face per frame.
    """

    config: LiveConfig
    detect_every: int = 1
    detect_ms: _Ema = field(default_factory=_Ema)
    face_ms: _Ema = field(default_factory=_Ema)
    other_ms: _Ema = field(default_factory=_Ema)
    _since_detect: int = 0
    _last_emotion: dict[int, float] = field(default_factory=dict)

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.config.budget_utilisation / self.config.max_fps

    def plan(self, t: float, faces: list[int]) -> tuple[bool, set[int]]:
        """Decide for the frame at media time `t` with these known faces.

        Returns:
            (run the detector?, face numbers whose expression to compute).
        """
        detect = self._since_detect + 1 >= self.detect_every or not faces
        room = self.frame_ms - self.other_ms.value - (self.detect_ms.value if detect else 0.0)
        per_face = max(self.face_ms.value, 0.1)
        fit = max(1, int(room // per_face)) if self.face_ms.seen else len(faces)
        period = 1.0 / self.config.emotion_fps
        due = sorted(
            (n for n in faces if t - self._last_emotion.get(n, -1e9) >= period - 1e-6),
            key=lambda n: self._last_emotion.get(n, -1e9),
        )
        return detect, set(due[:fit])

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        """Learn from a finished frame and adapt `detect_every`."""
        ms = result.timings_ms
        if detected:
            self.detect_ms.add(ms.get("detect", 0.0) + ms.get("track", 0.0))
            self._since_detect = 0
        else:
            self._since_detect += 1
        if result.emotions:
            self.face_ms.add(ms.get("emotion", 0.0) / result.emotions)
        self.other_ms.add(ms.get("smooth", 0.0) + ms.get("flow", 0.0) + ms.get("actions", 0.0))
        for f in result.faces:
            if f.fresh:
                self._last_emotion[f.number] = t
        emotion_per_frame = (
            self.face_ms.value
            * len(result.faces)
            * min(1.0, self.config.emotion_fps / self.config.max_fps)
        )
        room = max(self.frame_ms - emotion_per_frame - self.other_ms.value, 1.0)
        want = math.ceil(self.detect_ms.value / room)
        self.detect_every = min(max(want, 1), self.config.detect_every_max)
