"""Upper-body posture from BlazePose (pose_landmark_lite/full.onnx), where it is visible.

The person crop is placed from the face box (head-and-shoulders framing: centre
`crop_down` face heights below the face centre, side `crop_side` face heights: 2 and 5, the
tightest that put the shoulders where they are on our clips; tighter crops pull them up to
the chin), or, while the
last result was good, from the last landmarks as MediaPipe tracks (centred between the
shoulders and the face). Each cue has a visibility gate and is None ("not visible") when its
landmarks are not seen, never a guess:

- lean: log of the face's size against this person's running median (> 0: nearer the
  camera, "leaning in"; < 0: "leaning back"); needs only the face.
- shoulders_raised: the neck gap (shoulder line to the ears) shorter than this person's median
  by `raise_share` of the shoulder width; needs both shoulders visible, below the chin and
  1.3 face widths apart (on face-only crops the model puts guessed shoulders at the chin).
- hand_to_face: two hand points within the face box (widened by a quarter to the sides and
  above, not below the chin); needs a wrist seen with visibility >= `wrist_min` (0.8: on
  face-only crops the lite model guesses hands at the chin with up to about 0.7) and two
  visible hand points.
- activity: mean visible wrist speed in face heights per second ("gesturing").
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from stream.core.types import F32

U8 = npt.NDArray[np.uint8]

CROP = 256
NOSE, EAR_L, EAR_R, SH_L, SH_R, WR_L, WR_R = 0, 7, 8, 11, 12, 15, 16
HAND = (15, 16, 17, 18, 19, 20, 21, 22)


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))), np.float32)


@dataclass(frozen=True)
class PoseLandmarks:
    """One BlazePose result in image pixels."""

    points: F32  # [33, 2] x, y image pixels
    visibility: F32  # [33] 0..1 (in frame and not occluded)
    presence: float  # the person-presence score 0..1
    ms: float

    def visible(self, i: int, threshold: float = 0.5) -> bool:
        return bool(self.visibility[i] >= threshold)


class PoseModel:
    """BlazePose landmarks of a person crop placed from a face box (stateless).

    Args:
        session: ONNX Runtime session of pose_landmark_lite or pose_landmark_full.
        crop_side: crop side in face heights.
        crop_down: crop centre below the face centre, in face heights.
    """

    def __init__(self, session: Any, crop_side: float = 5.0, crop_down: float = 2.0) -> None:
        if not 2 <= crop_side <= 8 or not 0 <= crop_down <= 4:
            raise ValueError("crop_side must be in [2, 8] and crop_down in [0, 4] face heights")
        self.session = session
        self.crop_side = crop_side
        self.crop_down = crop_down
        self._in = session.get_inputs()[0].name

    def crop_from_face(self, box: F32) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the crop for a face box x1, y1, x2, y2."""
        x1, y1, x2, y2 = (float(v) for v in box)
        fh = max(y2 - y1, 1.0)
        return (x1 + x2) / 2, (y1 + y2) / 2 + self.crop_down * fh, self.crop_side * fh

    def __call__(
        self, image: U8, crop: tuple[float, float, float], bgr: bool = True
    ) -> PoseLandmarks:
        """Landmarks of the square crop (centre x, centre y, side) of `image`."""
        t0 = time.perf_counter()
        cx, cy, side = crop
        k = side / CROP
        m = np.array([[k, 0, cx - side / 2], [0, k, cy - side / 2]], np.float32)
        patch = cv2.warpAffine(
            image,
            m,
            (CROP, CROP),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        if bgr:
            patch = patch[:, :, ::-1]
        x = (patch.astype(np.float32) / 255.0)[None]
        outs = self.session.run(None, {self._in: x})
        lm = np.asarray(outs[0], np.float32).reshape(39, 5)[:33]
        presence = float(np.asarray(outs[1]).ravel()[0])
        pts = lm[:, :2] * k + np.array([cx - side / 2, cy - side / 2], np.float32)
        vis = _sigmoid(lm[:, 3])
        h, w = image.shape[:2]
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        vis = np.where(inside, vis, 0.0).astype(np.float32)
        return PoseLandmarks(
            pts.astype(np.float32), vis, presence, (time.perf_counter() - t0) * 1e3
        )


@dataclass(frozen=True)
class PostureSample:
    """Posture cues of one person at one time; None = not visible."""

    visible: bool  # a person was found in the crop
    lean: float | None  # log face size vs the person's median (> 0 nearer: leaning in)
    shoulders_raised: bool | None
    hand_to_face: bool | None
    activity: float | None  # wrist speed, face heights per second

    @property
    def lean_word(self) -> str | None:
        if self.lean is None:
            return None
        return "leaning in" if self.lean > 0.1 else "leaning back" if self.lean < -0.1 else None

    def to_json(self) -> dict[str, object]:
        return {
            "visible": self.visible,
            "lean": None if self.lean is None else round(self.lean, 3),
            "shoulders_raised": self.shoulders_raised,
            "hand_to_face": self.hand_to_face,
            "activity": None if self.activity is None else round(self.activity, 3),
        }


@dataclass
class _Person:
    sizes: deque[float]
    gaps: deque[float]
    wrists: deque[tuple[float, F32, npt.NDArray[np.bool_]]]
    crop: tuple[float, float, float] | None = None


class PostureTracker:
    """Per-face posture cues over time (baselines are running medians of this person).

    Args:
        model: the pose model.
        presence_min: person-presence score below which nothing is visible.
        visibility_min: landmark visibility for a point to count.
        raise_share: neck-gap shortening (share of shoulder width) that is "shoulders raised".
        baseline_n: samples in the running medians.
        wrist_min: wrist visibility a hand-to-face call needs.
    """

    def __init__(
        self,
        model: PoseModel,
        presence_min: float = 0.5,
        visibility_min: float = 0.5,
        raise_share: float = 0.08,
        baseline_n: int = 120,
        wrist_min: float = 0.8,
    ) -> None:
        if not (0 < presence_min < 1 and 0 < visibility_min < 1 and 0 < wrist_min < 1):
            raise ValueError("presence_min, visibility_min and wrist_min must be in (0, 1)")
        if raise_share <= 0 or baseline_n < 3:
            raise ValueError("raise_share must be > 0 and baseline_n >= 3")
        self.model = model
        self.presence_min = presence_min
        self.visibility_min = visibility_min
        self.raise_share = raise_share
        self.baseline_n = baseline_n
        self.wrist_min = wrist_min
        self._people: dict[int, _Person] = {}

    def update(self, face: int, t: float, image: U8, box: F32, bgr: bool = True) -> PostureSample:
        """Run the pose model for `face` (box: its face box) and return its cues."""
        p = self._people.get(face)
        if p is None:
            n = self.baseline_n
            p = self._people[face] = _Person(deque(maxlen=n), deque(maxlen=n), deque(maxlen=8))
        fh = float(box[3] - box[1])
        crop = self.model.crop_from_face(box)
        last = p.crop
        if (
            last is not None
            and abs(last[0] - crop[0]) < fh
            and abs(last[1] - crop[1]) < fh
            and 0.6 * crop[2] <= last[2] <= 1.6 * crop[2]
        ):
            crop = last  # as MediaPipe tracks: the crop from the last landmarks
        lm = self.model(image, crop, bgr)
        return self.cues(p, t, lm, box)

    def cues(self, p: _Person, t: float, lm: PoseLandmarks, box: F32) -> PostureSample:
        """The gated cues of one result (and the next crop from its landmarks)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        fh = max(y2 - y1, 1.0)
        p.sizes.append(math.log(fh))
        lean = p.sizes[-1] - float(np.median(p.sizes)) if len(p.sizes) >= 5 else None
        if lm.presence < self.presence_min:
            p.crop = None
            return PostureSample(False, lean, None, None, None)
        vm = self.visibility_min
        shoulders = lm.visible(SH_L, vm) and lm.visible(SH_R, vm)
        if shoulders:  # real shoulders sit below the chin and wider than the face
            sh = lm.points[[SH_L, SH_R]]
            wide = float(abs(sh[0, 0] - sh[1, 0])) >= 1.3 * (x2 - x1)
            shoulders = wide and bool(np.all(sh[:, 1] > y2))
        raised = None
        if shoulders:
            sw = float(np.linalg.norm(lm.points[SH_L] - lm.points[SH_R]))
            sh_y = float(lm.points[[SH_L, SH_R], 1].mean())
            ears = [e for e in (EAR_L, EAR_R) if lm.visible(e, vm)]
            head_y = float(lm.points[ears, 1].mean()) if ears else float(lm.points[NOSE, 1])
            gap = (sh_y - head_y) / max(sw, 1.0)
            p.gaps.append(gap)
            if len(p.gaps) >= 5:
                raised = bool(float(np.median(p.gaps)) - gap > self.raise_share)
            # next crop around shoulders and face, as MediaPipe places it from landmarks
            cx = float(lm.points[[SH_L, SH_R, NOSE], 0].mean())
            cy = (sh_y + (y1 + y2) / 2) / 2 + 0.5 * fh
            p.crop = (cx, cy, max(self.model.crop_side * fh, 1.8 * sw))
        else:
            p.crop = None
        hands = [i for i in HAND if lm.visible(i, vm)]
        hand_to_face = None
        # the lite model guesses hands at the chin of face-only crops with wrist visibility
        # up to about 0.7 (measured); a real hand on the face scored 0.87
        wrist = lm.visible(WR_L, self.wrist_min) or lm.visible(WR_R, self.wrist_min)
        if wrist and len(hands) >= 2:
            mx = 0.25 * (x2 - x1)
            pts = lm.points[hands]
            on_face = (
                (pts[:, 0] > x1 - mx)
                & (pts[:, 0] < x2 + mx)
                & (pts[:, 1] > y1 - 0.25 * fh)
                & (pts[:, 1] < y2)  # not below the chin, where arms at rest are guessed
            )
            hand_to_face = bool(on_face.sum() >= 2)
        wr = lm.points[[WR_L, WR_R]] / fh
        seen = np.array([lm.visible(WR_L, vm), lm.visible(WR_R, vm)])
        p.wrists.append((t, wr, seen))
        activity = None
        if len(p.wrists) >= 2:
            speeds = []
            for (ta, a, sa), (tb, b, sb) in zip(
                list(p.wrists)[:-1], list(p.wrists)[1:], strict=True
            ):
                both = sa & sb
                if tb > ta and both.any():
                    speeds.append(
                        float(np.linalg.norm(b[both] - a[both], axis=1).mean()) / (tb - ta)
                    )
            activity = float(np.mean(speeds)) if speeds else None
        return PostureSample(True, lean, raised, hand_to_face, activity)

    def forget(self, face: int) -> None:
        self._people.pop(face, None)

    def reset(self) -> None:
        self._people.clear()
