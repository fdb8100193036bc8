"""Which work an analysed frame gets: one strategy per video track, injected into the analysis.

`FrameScheduler` is the contract; `FixedSchedule` (here, files) plans in media time only;
live tracks get a `TrackBudget` of the process's `MachineBudget` (stream/analysis/budget.py),
which adapts to measured times and shares the machine with the other streams.

Files are analysed as fast as the machine allows, so the schedule must not depend on measured
times (results would differ between machines): detection runs at least `detect_fps` times per
second of media (optical flow moves the faces in between), and each face's expression is
computed at most `emotion_fps` times per second (smoothing carries it in between). At or below
those rates every analysed frame gets everything.

When tracking is confident (the last `CONFIDENT_AFTER` detections found exactly the faces the
flow followed, where it had put them, and no new face) the detector runs on the whole frame
only `confident_detect_fps` times per second: a decision on results, not on times, so files
stay deterministic. With `coarse`, detections in between run at `confident_coarse_fps` (at
most `detect_fps`), on the frame scaled down further (`coarse_now`; the pipeline keeps full
scale where faces are small); without, only the flow moves the faces in between. A face
that appears meanwhile is found at the next whole-frame detection (within 1 /
confident_detect_fps seconds, or at the next coarse one when it is large enough); from then on
detection is back at full scale and `detect_fps` until the tracking is confident again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from stream.core.config import AnalyzeConfig
from stream.core.types import F32
from stream.vision.pipeline import FrameResult
from stream.vision.tracker import iou_matrix

#: Tracking is confident after this many detections in a row that found what the flow followed
#: (the same faces, boxes overlapping at least `CONFIDENT_IOU`), as live tracks judge it.
CONFIDENT_AFTER = 2
CONFIDENT_IOU = 0.6


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
        confident_detect_fps: whole-frame detections per second while tracking is confident
            (0 or at least `detect_fps`: always `detect_fps`).
        coarse: while confident, coarse detections between the whole-frame ones (else the
            flow alone moves the faces in between)...
        confident_coarse_fps: ...at this rate (0 or at least `detect_fps`: `detect_fps`).
    """

    def __init__(
        self,
        detect_fps: float,
        emotion_fps: float,
        confident_detect_fps: float = 0.0,
        coarse: bool = False,
        confident_coarse_fps: float = 0.0,
    ) -> None:
        rates = (detect_fps, emotion_fps, confident_detect_fps, confident_coarse_fps)
        if min(rates) < 0:
            raise ValueError(
                "detect_fps, emotion_fps, confident_detect_fps and confident_coarse_fps must be"
                f" >= 0, got {rates}"
            )
        self.detect_period = 1.0 / detect_fps if detect_fps > 0 else 0.0
        self.emotion_period = 1.0 / emotion_fps if emotion_fps > 0 else 0.0
        self.confident_period = max(
            1.0 / confident_detect_fps if confident_detect_fps > 0 else 0.0, self.detect_period
        )
        self.coarse = coarse
        self.coarse_period = max(
            1.0 / confident_coarse_fps if confident_coarse_fps > 0 else 0.0, self.detect_period
        )
        self.judge = TrackingJudge()
        #: The frame just planned detects coarsely (set by `plan`).
        self.coarse_now = False
        self._last_full = -1e9
        self._last_detect = -1e9
        self._last_emotion: dict[int, float] = {}

    def plan(self, t: float, faces: list[int]) -> tuple[bool, set[int] | None]:
        """(run the detector?, faces whose expression to compute; None: all) at media time t."""
        detect = not faces or self.detect_due(t)
        self.coarse_now = detect and bool(faces) and self.coarse_due(t)
        if detect:
            self._last_detect = t
            if not self.coarse_now:
                self._last_full = t
        if not self.emotion_period:
            return detect, None
        due = {
            n for n in faces if t - self._last_emotion.get(n, -1e9) >= self.emotion_period - 1e-3
        }
        for n in due:
            self._last_emotion[n] = t
        return detect, due

    def detect_due(self, t: float) -> bool:
        """Whether `plan` would run the detector at media time `t` as things stand (faces
        known; a guess for starting the detector ahead, nothing changes)."""
        if self.confident:
            coarse_due = self.coarse and t - self._last_detect >= self.coarse_period - 1e-3
            return self._full_due(t) or coarse_due
        return t - self._last_detect >= self.detect_period - 1e-3

    def coarse_due(self, t: float) -> bool:
        """Whether a detection at media time `t` would be coarse, as things stand."""
        return self.coarse and self.confident and not self._full_due(t)

    def _full_due(self, t: float) -> bool:
        """A whole-frame detection is due at `t` while tracking is confident."""
        return t - self._last_full >= self.confident_period - 1e-3

    @property
    def confident(self) -> bool:
        """The last detections found what the flow followed (see the module docstring)."""
        return self.judge.confident

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        """Judge the tracking on detector frames (results only: never measured times)."""
        self.judge.observe(result, detected)


class TrackingJudge:
    """Whether a track's tracking is confident: the last `CONFIDENT_AFTER` detections found
    exactly the faces the optical flow followed (the same faces, boxes overlapping at least
    `CONFIDENT_IOU`) and no new one. Judged on results only, for files and live tracks alike."""

    def __init__(self) -> None:
        self.confident = False
        self._streak = 0
        self._boxes: dict[int, F32] = {}

    def observe(self, result: FrameResult, detected: bool) -> bool:
        """Take an analysed frame; True when the judgement changed."""
        boxes = {f.number: np.asarray(f.box, np.float32) for f in result.faces}
        before = self.confident
        if detected:
            ids = result.detections.track_ids
            new = bool(len(ids)) and bool((ids <= 0).any())  # tentative or unidentified
            prev = self._boxes
            ok = (
                bool(boxes)
                and not new
                and set(boxes) == set(prev)
                and bool((_paired_iou(prev, boxes) >= CONFIDENT_IOU).all())
            )
            self._streak = self._streak + 1 if ok else 0
            self.confident = self._streak >= CONFIDENT_AFTER
        self._boxes = boxes
        return self.confident != before


def _paired_iou(a: dict[int, F32], b: dict[int, F32]) -> F32:
    """IoU of each face's box in `a` with its box in `b` (the same faces in both)."""
    keys = list(b)
    return np.diag(iou_matrix(np.stack([a[n] for n in keys]), np.stack([b[n] for n in keys])))


def file_schedule(a: AnalyzeConfig, voice: bool = False) -> FixedSchedule:
    """The schedule of a file's (or the Python API's pushed) frames, from `[analyze]`.

    With `voice` (voices are matched to faces) the detections between the whole-frame ones
    stay at full scale: a coarse detection moves a face's mouth corners by a few pixels from
    one detection to the next, which the active-speaker matcher reads as lip motion (a still
    photo's mouth was scored on 51 of 79 reports)."""
    coarse = a.coarse_max_side > 0 and not voice
    return FixedSchedule(
        a.detect_fps, a.emotion_fps, a.confident_detect_fps, coarse, a.confident_coarse_fps
    )


def every_frame() -> FixedSchedule:
    """Detection and every face's expression on every frame."""
    return FixedSchedule(0.0, 0.0)
