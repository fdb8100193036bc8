"""Which work an analysed frame gets: one strategy per video track, injected into the analysis.

`FrameScheduler` is the contract; `FixedSchedule` (here, files) plans in media time only;
live tracks get a `TrackBudget` of the process's `MachineBudget` (stream/analysis/budget.py),
which adapts to measured times and shares the machine with the other streams.

Files are analysed as fast as the machine allows, so the schedule must not depend on measured
times (results would differ between machines): detection runs at least `detect_fps` times per
second of media (optical flow moves the faces in between), and each face's expression is
computed at most `emotion_fps` times per second (smoothing carries it in between). At or below
those rates every analysed frame gets everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stream.vision.pipeline import FrameResult


class FrameScheduler(Protocol):
    """Plans the frames of one video track."""

    def plan(self, t: float, known_faces: list[int]) -> tuple[bool, set[int] | None]:
        """(run the detector?, faces whose expression to compute; None: all) for the frame at
        media time `t`, given the faces of the track's last analysed frame."""
        ...

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        """Learn from the analysed frame (measured times)."""
        ...


#: Makes each video track's scheduler.
SchedulerFactory = Callable[[], FrameScheduler]


class FixedSchedule:
    """Plans the frames of one video track.

    Args:
        detect_fps: detections per second of media time (0: every frame).
        emotion_fps: expression updates per face per second (0: every frame).
    """

    def __init__(self, detect_fps: float, emotion_fps: float) -> None:
        if detect_fps < 0 or emotion_fps < 0:
            raise ValueError("detect_fps and emotion_fps must be >= 0")
        self.detect_period = 1.0 / detect_fps if detect_fps > 0 else 0.0
        self.emotion_period = 1.0 / emotion_fps if emotion_fps > 0 else 0.0
        self._last_detect = -1e9
        self._last_emotion: dict[int, float] = {}

    def plan(self, t: float, faces: list[int]) -> tuple[bool, set[int] | None]:
        """(run the detector?, faces whose expression to compute; None: all) at media time t."""
        detect = not faces or t - self._last_detect >= self.detect_period - 1e-3
        if detect:
            self._last_detect = t
        if not self.emotion_period:
            return detect, None
        due = {
            n for n in faces if t - self._last_emotion.get(n, -1e9) >= self.emotion_period - 1e-3
        }
        for n in due:
            self._last_emotion[n] = t
        return detect, due

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        """A fixed schedule does not depend on measured times."""


def every_frame() -> FixedSchedule:
    """Detection and every face's expression on every frame."""
    return FixedSchedule(0.0, 0.0)
