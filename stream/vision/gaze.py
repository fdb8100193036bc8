"""Gaze direction, attention toward the camera/screen, blinks and attention drops, per face.

Gaze = head pose + the eyes' turn in the head, from where each iris centre (landmarks 468 and
473) sits against its eye corners (33/133, 263/362); the lids (159/145, 386/374) give the eye
openness. Against MediaPipe's own eyeLook blendshapes (tests/test_posture.py): horizontal
r = 0.89-0.95 on two clear clips, vertical 0.38-0.97 (small ranges are noisy). Angles in
degrees with headpose's convention: gaze_x > 0 toward the image's right, gaze_y > 0 up.
Without fresh landmarks the last eye turn is kept for `eye_hold_s`, then the head alone is used.

Attention: 1 inside an elliptical cone around the camera (half-widths `cone_yaw_deg`,
`cone_pitch_deg`, centred `cone_pitch_centre_deg` up or down: a screen below the camera is a
negative centre), falling linearly to 0 at 1.5 times the cone. It says where the face points,
not what the person attends to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.core.types import F32
from stream.vision.headpose import HeadPose

#: (outer corner, inner corner, upper lid, lower lid, iris centre) of the image-left and
#: image-right eye of an unmirrored face (MediaPipe Face Mesh indices).
EYES = ((33, 133, 159, 145, 468), (263, 362, 386, 374, 473))
#: eye-in-head rotation per unit of iris offset (offset in half eye widths): asin(1.2 x).
_EYE_GAIN = 1.2


@dataclass(frozen=True)
class EyeState:
    """The eyes of one face on a frame with landmarks."""

    yaw: float  # eye turn in the head, degrees (+: toward the image's right)
    pitch: float  # degrees (+: up)
    openness: float  # lid gap / eye width, mean of both eyes (about 0.25-0.35 open, < 0.1 shut)


def eye_state(landmarks: F32) -> EyeState:
    """Eye turn and openness from [478, 3] landmarks (image pixels)."""
    yaws, pitches, opens = [], [], []
    for outer, inner, up, low, iris in EYES:
        a, b = landmarks[outer, :2].astype(np.float64), landmarks[inner, :2].astype(np.float64)
        axis = b - a
        width = float(np.linalg.norm(axis))
        if width < 1e-6:
            continue
        ux = axis / width
        if ux[0] < 0:  # point toward the image's right
            ux = -ux
        uy = np.array([ux[1], -ux[0]])  # up in the image (y grows down)
        mid = (a + b) / 2
        d = landmarks[iris, :2].astype(np.float64) - mid
        hx = float(d @ ux) / (width / 2)
        # vertical: against the corners' line, not the lids' middle (lids move with squints,
        # smiles and crying: that reference disagreed with MediaPipe's eyeLookUp/Down)
        hy = float(d @ uy) / (width / 2)
        yaws.append(math.degrees(math.asin(max(-1.0, min(1.0, _EYE_GAIN * hx)))))
        pitches.append(math.degrees(math.asin(max(-1.0, min(1.0, _EYE_GAIN * hy)))))
        opens.append(float(np.linalg.norm(landmarks[up, :2] - landmarks[low, :2])) / width)
    if not yaws:
        return EyeState(0.0, 0.0, 0.0)
    return EyeState(float(np.mean(yaws)), float(np.mean(pitches)), float(np.mean(opens)))


@dataclass(frozen=True)
class GazeSample:
    """Where one face looks on one frame."""

    x: float  # gaze_x, degrees (+: toward the image's right)
    y: float  # gaze_y, degrees (+: up)
    attention: float  # 0..1: inside the camera/screen cone
    eyes: bool  # the eyes' turn was used (fresh or held), else the head alone

    @property
    def looking(self) -> bool:
        return self.attention >= 0.5


@dataclass(frozen=True)
class AttentionDrop:
    """A stretch of looking away longer than the configured time."""

    face: int
    start: float
    end: float

    def to_json(self) -> dict[str, object]:
        return {
            "face": self.face,
            "behaviour": "looking away",
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "duration_s": round(self.end - self.start, 2),
        }


class GazeTracker:
    """Per-face gaze and attention in media time, with attention drops as events.

    Args:
        cone_yaw_deg, cone_pitch_deg: half-widths of the attention cone.
        cone_pitch_centre_deg: the cone's vertical centre (negative: below the camera).
        drop_min_s: looking away at least this long is an attention drop.
        eye_hold_s: how long the eyes' last turn is used without fresh landmarks.
    """

    def __init__(
        self,
        cone_yaw_deg: float = 25.0,
        cone_pitch_deg: float = 20.0,
        cone_pitch_centre_deg: float = -5.0,
        drop_min_s: float = 2.0,
        eye_hold_s: float = 0.6,
    ) -> None:
        if not (0 < cone_yaw_deg <= 90 and 0 < cone_pitch_deg <= 90):
            raise ValueError("cone half-widths must be in (0, 90] degrees")
        if not -45 <= cone_pitch_centre_deg <= 45:
            raise ValueError("cone_pitch_centre_deg must be in [-45, 45]")
        if drop_min_s <= 0 or eye_hold_s < 0:
            raise ValueError("drop_min_s must be > 0 and eye_hold_s >= 0")
        self.cone = (cone_yaw_deg, cone_pitch_deg, cone_pitch_centre_deg)
        self.drop_min_s = drop_min_s
        self.eye_hold_s = eye_hold_s
        self._eyes: dict[int, tuple[float, EyeState]] = {}
        self._away: dict[int, tuple[float, float]] = {}  # face -> (away since, last seen)

    def attention(self, x: float, y: float) -> float:
        """0..1 for a gaze direction (degrees)."""
        cy, cp, cc = self.cone
        r = math.hypot(x / cy, (y - cc) / cp)
        return float(min(1.0, max(0.0, (1.5 - r) / 0.5)))

    def update(
        self, face: int, t: float, head: HeadPose, landmarks: F32 | None = None
    ) -> tuple[GazeSample, EyeState | None, list[AttentionDrop]]:
        """The gaze of `face` at `t`; the eye state when landmarks are given; drops that ended.

        Attention drops end when the face looks back (or at `flush`).
        """
        eye = None
        if landmarks is not None and len(landmarks) >= 478:
            eye = eye_state(landmarks)
            self._eyes[face] = (t, eye)
        held = self._eyes.get(face)
        use = held is not None and 0 <= t - held[0] <= self.eye_hold_s
        ex, ey = (held[1].yaw, held[1].pitch) if use and held is not None else (0.0, 0.0)
        x, y = head.yaw + ex, head.pitch + ey
        sample = GazeSample(x, y, self.attention(x, y), use)
        return sample, eye, self._drops(face, t, sample.looking)

    def _drops(self, face: int, t: float, looking: bool) -> list[AttentionDrop]:
        away = self._away.get(face)
        if away is not None and t < away[1]:
            away = None  # a new pass
        if looking:
            self._away.pop(face, None)
            if away is not None and away[1] - away[0] >= self.drop_min_s:
                return [AttentionDrop(face, away[0], t)]
            return []
        self._away[face] = (away[0] if away is not None else t, t)
        return []

    def flush(self) -> list[AttentionDrop]:
        """Drops still open at the end (ending when the face was last seen)."""
        return self.flush_faces(list(self._away))

    def flush_faces(self, faces: list[int]) -> list[AttentionDrop]:
        """The open drops of these faces, ended when each was last seen."""
        out = []
        for f in faces:
            away = self._away.pop(f, None)
            if away is not None and away[1] - away[0] >= self.drop_min_s:
                out.append(AttentionDrop(f, away[0], away[1]))
        return out

    def forget(self, face: int) -> None:
        """Drop a face's state (an open drop is not reported)."""
        self._eyes.pop(face, None)
        self._away.pop(face, None)

    def reset(self) -> None:
        self._eyes.clear()
        self._away.clear()


class BlinkCounter:
    """Blink rate per minute from eye openness (or blendshape eyeBlink) samples.

    With samples at least `event_fps` per second, blinks are counted as closures (openness
    below `closed`, back above `open_`). With sparser samples (facial actions run at a few per
    second per face), blinks are too short to catch one by one: the rate is then estimated
    from the share of samples with shut eyes divided by a typical blink length
    (`blink_s`), and `method` says so. Either needs `min_s` of samples to report a rate.
    """

    def __init__(
        self,
        closed: float = 0.12,
        open_: float = 0.18,
        event_fps: float = 8.0,
        blink_s: float = 0.2,
        min_s: float = 20.0,
    ) -> None:
        if not 0 < closed < open_:
            raise ValueError("need 0 < closed < open_")
        self.closed, self.open_ = closed, open_
        self.event_fps, self.blink_s, self.min_s = event_fps, blink_s, min_s
        self.samples = 0
        self.shut = 0
        self.events = 0
        self.first: float | None = None
        self.last: float | None = None
        self._is_shut = False

    def add(self, t: float, openness: float) -> bool:
        """One sample; True when it completes a blink (counted event)."""
        if self.first is None:
            self.first = t
        self.last = t
        self.samples += 1
        done = False
        if openness < self.closed:
            self.shut += 1
            self._is_shut = True
        elif openness > self.open_ and self._is_shut:
            self._is_shut = False
            self.events += 1
            done = True
        return done

    @property
    def method(self) -> str:
        if self.first is None or self.last is None or self.last <= self.first:
            return "none"
        fps = (self.samples - 1) / (self.last - self.first)
        return "events" if fps >= self.event_fps else "occupancy"

    def rate_per_min(self) -> float | None:
        """Blinks per minute, None before `min_s` of samples."""
        if self.first is None or self.last is None or self.last - self.first < self.min_s:
            return None
        span = self.last - self.first
        if self.method == "events":
            return 60.0 * self.events / span
        return 60.0 * (self.shut / self.samples) / self.blink_s
