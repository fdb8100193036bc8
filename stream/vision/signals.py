"""One object per stream that turns each analysed frame's faces into behaviour signals: head
pose, gaze and attention, eye openness, nods/shakes, attention drops and (at `posture_fps`)
upper-body posture. The vision pipeline calls `update` once per analysed frame after identity
and facial actions; events come back as they end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stream.core.config import BehaviourConfig, Config
from stream.core.errors import ModelError
from stream.core.types import F32, U8
from stream.vision.gaze import AttentionDrop, EyeState, GazeSample, GazeTracker
from stream.vision.gestures import GestureDetector, HeadGesture
from stream.vision.headpose import CanonicalFace, HeadPose, HeadPoseTracker, LandmarkPose, PointPose
from stream.vision.posture import PoseModel, PostureSample, PostureTracker

BUNDLE = "face_landmarker_task"  # the manifest entry holding MediaPipe's canonical face
PRUNE_S = 30.0  # faces unseen this long (media time) are forgotten


@dataclass(frozen=True)
class FaceInput:
    """What the pipeline knows of one face on one analysed frame."""

    number: int
    box: F32  # x1, y1, x2, y2 pixels
    points: F32  # [5, 2] detector points
    landmarks: F32 | None = None  # [478, 3] when facial actions ran on this face this frame


@dataclass(frozen=True)
class FaceSignals:
    """One face's signals on one analysed frame."""

    pose: HeadPose  # smoothed, for display and CSV
    raw_pose: HeadPose  # unsmoothed; `source` says landmarks / flow / points
    gaze: GazeSample
    eyes: EyeState | None  # on frames with landmarks
    posture: PostureSample | None  # on frames where posture ran for this face

    def to_json(self) -> dict[str, object]:
        """The additive frame-event fields of this face."""
        out: dict[str, object] = {
            "head": {
                "yaw": round(self.pose.yaw, 1),
                "pitch": round(self.pose.pitch, 1),
                "roll": round(self.pose.roll, 1),
                "source": self.raw_pose.source,
            },
            "gaze": {
                "x": round(self.gaze.x, 1),
                "y": round(self.gaze.y, 1),
                "eyes": self.gaze.eyes,
            },
            "attention": round(self.gaze.attention, 2),
            "looking_away": not self.gaze.looking,
        }
        if self.eyes is not None:
            out["eye_openness"] = round(self.eyes.openness, 3)
        if self.posture is not None:
            out["posture"] = self.posture.to_json()
        return out


@dataclass
class FrameSignals:
    """Signals of every face of one frame, and the events that ended on it."""

    faces: dict[int, FaceSignals] = field(default_factory=dict)
    gestures: list[HeadGesture] = field(default_factory=list)
    drops: list[AttentionDrop] = field(default_factory=list)


class BehaviourSignals:
    """Per-stream state of all behaviour signals (see module doc).

    Args:
        config: the [behaviour] settings.
        head: head-pose tracker; gaze, gestures: their trackers.
        posture: the posture tracker, or None when posture is off for this stream.
    """

    def __init__(
        self,
        config: BehaviourConfig,
        head: HeadPoseTracker,
        gaze: GazeTracker,
        gestures: GestureDetector,
        posture: PostureTracker | None = None,
    ) -> None:
        self.config = config
        self.head = head
        self.gaze = gaze
        self.gestures = gestures
        self.posture = posture
        self._posture_last: dict[int, float] = {}
        self._posture_any = -math.inf
        self._seen: dict[int, float] = {}
        self._pruned = -math.inf

    @classmethod
    def from_config(cls, config: Config, factory: Any, live: bool = False) -> BehaviourSignals:
        """Build from the config; sessions and the canonical face come from `factory`.

        Raises:
            ModelError: the face_landmarker.task bundle or the posture model is missing or
                not what the config says.
        """
        b = config.behaviour
        try:
            face = CanonicalFace.from_task(factory.store.path(BUNDLE))
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        posture = None
        if b.posture_live if live else b.posture:
            spec = factory.store.manifest[b.posture_model]
            if spec.task != "landmarks" or not spec.name.startswith("pose_"):
                raise ModelError(f"behaviour.posture_model = {spec.name} is not a pose model")
            model = PoseModel(factory.get(spec.name), crop_side=b.posture_crop_side)
            posture = PostureTracker(model)
        return cls.build(b, face, posture)

    @classmethod
    def build(
        cls, b: BehaviourConfig, face: CanonicalFace, posture: PostureTracker | None = None
    ) -> BehaviourSignals:
        """Trackers over an already read canonical face (posture: given or off)."""
        head = HeadPoseTracker(PointPose(face), LandmarkPose(face), b.pose_tau_s)
        gaze = GazeTracker(
            b.cone_yaw_deg, b.cone_pitch_deg, b.cone_pitch_centre_deg, b.drop_min_s, b.eye_hold_s
        )
        gestures = GestureDetector(b.nod_min_deg, b.shake_min_deg, b.max_swing_s)
        return cls(b, head, gaze, gestures, posture)

    def update(
        self, t: float, image: U8, faces: list[FaceInput], bgr: bool = True, grey: U8 | None = None
    ) -> FrameSignals:
        """Signals of this frame's faces (media time `t`, the frame as decoded; `grey`: its
        full-size grey copy if already made)."""
        out = FrameSignals()
        for f in faces:
            self._seen[f.number] = t
        if t - self._pruned >= PRUNE_S:
            out.drops += self._prune(t)
        h, w = image.shape[:2]
        due = self._posture_due(t, [f.number for f in faces])
        for f in faces:
            pose = self.head.update(f.number, t, f.points, w, h, f.landmarks, image, grey)
            raw = self.head.raw(f.number) or pose
            g, eyes, drops = self.gaze.update(f.number, t, pose, f.landmarks)
            out.drops += drops
            out.gestures += self.gestures.update(f.number, t, raw.yaw, raw.pitch)
            post = None
            if self.posture is not None and f.number in due:
                post = self.posture.update(f.number, t, image, f.box, bgr)
            out.faces[f.number] = FaceSignals(pose, raw, g, eyes, post)
        return out

    def _prune(self, t: float) -> list[AttentionDrop]:
        """Forget faces unseen for PRUNE_S (long sessions see many); their open drops end."""
        self._pruned = t
        gone = [n for n, last in self._seen.items() if t - last > PRUNE_S or t < last]
        drops = self.gaze.flush_faces(gone)
        for n in gone:
            del self._seen[n]
            self.head.forget(n)
            self.gaze.forget(n)
            self.gestures.forget(n)
            self._posture_last.pop(n, None)
            if self.posture is not None:
                self.posture.forget(n)
        return drops

    def _posture_due(self, t: float, numbers: list[int]) -> set[int]:
        """At most one face per frame, each at most `posture_fps` and all together at most
        `posture_max_per_s` per media second, the longest-waiting first."""
        if self.posture is None or not numbers:
            return set()
        if t - self._posture_any < 1.0 / self.config.posture_max_per_s - 1e-6:
            return set()  # the stream's pose calls per second are spent
        period = 1.0 / self.config.posture_fps
        due = [n for n in numbers if t - self._posture_last.get(n, -math.inf) >= period - 1e-6]
        if not due:
            return set()
        pick = min(due, key=lambda n: self._posture_last.get(n, -math.inf))
        self._posture_last[pick] = self._posture_any = t
        return {pick}

    def flush(self) -> FrameSignals:
        """Events still open at the end of the media or session."""
        return FrameSignals(gestures=self.gestures.flush(), drops=self.gaze.flush())

    def reset(self) -> None:
        self.head.reset()
        self.gaze.reset()
        self.gestures.reset()
        if self.posture is not None:
            self.posture.reset()
        self._posture_last.clear()
        self._posture_any = -math.inf
        self._seen.clear()
        self._pruned = -math.inf


def event_json(e: HeadGesture | AttentionDrop) -> dict[str, object]:
    """A behaviour event for the event stream: {"type": "gesture" | "attention_drop", ...}."""
    kind = "gesture" if isinstance(e, HeadGesture) else "attention_drop"
    return {"type": kind, **e.to_json()}
