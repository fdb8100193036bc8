"""Facial actions: MediaPipe Face Mesh v2 landmarks and 52 blendshape scores from our face boxes.

Two passes, as MediaPipe's own graph does: an eye-levelled square crop 1.5x the detector box
gives 478 landmarks; a second crop around those landmarks' extent (1.5x, same rotation) gives
steadier ones; 146 of them, in image pixels, go into the blendshape model.

Blendshape scores are facial-action intensities (0..1), not emotions. `ACTION_UNITS` maps the
subset whose correspondence to FACS action units is established by measurement (see the models'
MANIFEST.md: AUC of one score for one expression vs the rest on labelled photos); `AU_NOTES`
says where a mapping is weak or fails (noseSneer does not track disgust, so AU9 is not offered).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from stream.core.types import F32, U8

CROP = 256
#: Landmarks younger than this (media seconds) place a face's next facial-action crop.
ACTION_PRIOR_S = 1.5
BLENDSHAPES = [
    "_neutral",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeLookDownLeft",
    "eyeLookDownRight",
    "eyeLookInLeft",
    "eyeLookInRight",
    "eyeLookOutLeft",
    "eyeLookOutRight",
    "eyeLookUpLeft",
    "eyeLookUpRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "eyeWideLeft",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "noseSneerLeft",
    "noseSneerRight",
]
INDEX = {name: i for i, name in enumerate(BLENDSHAPES)}

#: The landmarks the blendshape model reads, in its order (MediaPipe face_blendshapes_graph).
BLENDSHAPE_LANDMARKS = np.array(
    [
        0,
        1,
        4,
        5,
        6,
        7,
        8,
        10,
        13,
        14,
        17,
        21,
        33,
        37,
        39,
        40,
        46,
        52,
        53,
        54,
        55,
        58,
        61,
        63,
        65,
        66,
        67,
        70,
        78,
        80,
        81,
        82,
        84,
        87,
        88,
        91,
        93,
        95,
        103,
        105,
        107,
        109,
        127,
        132,
        133,
        136,
        144,
        145,
        146,
        148,
        149,
        150,
        152,
        153,
        154,
        155,
        157,
        158,
        159,
        160,
        161,
        162,
        163,
        168,
        172,
        173,
        176,
        178,
        181,
        185,
        191,
        195,
        197,
        234,
        246,
        249,
        251,
        263,
        267,
        269,
        270,
        276,
        282,
        283,
        284,
        285,
        288,
        291,
        293,
        295,
        296,
        297,
        300,
        308,
        310,
        311,
        312,
        314,
        317,
        318,
        321,
        323,
        324,
        332,
        334,
        336,
        338,
        356,
        361,
        362,
        365,
        373,
        374,
        375,
        377,
        378,
        379,
        380,
        381,
        382,
        384,
        385,
        386,
        387,
        388,
        389,
        390,
        397,
        398,
        400,
        402,
        405,
        409,
        415,
        454,
        466,
        468,
        469,
        470,
        471,
        472,
        473,
        474,
        475,
        476,
        477,
    ],
    dtype=np.int64,
)
EYE_OUTER = (33, 263)  # the eye corners that level the second crop

#: AU-named facial actions: the mean of the listed blendshapes (left and right).
ACTION_UNITS: dict[str, tuple[str, ...]] = {
    "AU12_smile": ("mouthSmileLeft", "mouthSmileRight"),
    "AU26_jaw_drop": ("jawOpen",),
    "AU5_upper_lid_raise": ("eyeWideLeft", "eyeWideRight"),
    "AU2_outer_brow_raise": ("browOuterUpLeft", "browOuterUpRight"),
    "AU1_inner_brow_raise": ("browInnerUp",),
    "AU4_brow_lower": ("browDownLeft", "browDownRight"),
    "AU15_lip_corner_depress": ("mouthFrownLeft", "mouthFrownRight"),
    "AU45_blink": ("eyeBlinkLeft", "eyeBlinkRight"),
}
#: How far each AU mapping can be trusted (measured single-score AUCs, MANIFEST.md).
AU_NOTES: dict[str, str] = {
    "AU12_smile": "mouthSmile ranks happiness above the rest at AUC 0.97-1.00: reliable",
    "AU26_jaw_drop": "jawOpen ranks surprise at AUC 0.89-0.99 (AU26/27, also open-mouth speech)",
    "AU5_upper_lid_raise": "eyeWide ranks surprise at AUC 0.93-0.99",
    "AU2_outer_brow_raise": "browOuterUp ranks surprise at AUC 0.91-0.98",
    "AU1_inner_brow_raise": "browInnerUp: ARKit's inner brow raise; not measured separately",
    "AU4_brow_lower": "browDown ranks anger at only AUC 0.62-0.81: weak",
    "AU15_lip_corner_depress": "mouthFrown ranks sadness at only AUC 0.56-0.79: weak",
    "AU45_blink": "eyeBlink: eyelid closure (blinks, squints); not an expression cue",
}
#: Blendshapes that are deliberately NOT offered as an AU, and why.
NOT_MAPPED: dict[str, str] = {
    "AU9_nose_wrinkle": "noseSneer does not track disgust on labelled photos (the mapping fails)",
    "AU6_cheek_raise": "cheekSquint is near zero on most faces in these models; not validated",
}
AU_NAMES = tuple(ACTION_UNITS)
_AU_IDX = [np.array([INDEX[b] for b in bs]) for bs in ACTION_UNITS.values()]


def action_units(scores: F32) -> dict[str, float]:
    """The AU-named subset of 52 blendshape scores."""
    return {au: float(scores[idx].mean()) for au, idx in zip(AU_NAMES, _AU_IDX, strict=True)}


def au_vector(scores: F32) -> F32:
    """[len(AU_NAMES)] AU-named values of 52 scores."""
    return np.array([scores[idx].mean() for idx in _AU_IDX], np.float32)


@dataclass(frozen=True)
class FacialActions:
    """One face's landmarks and blendshape scores."""

    landmarks: F32  # [478, 3] x, y image pixels, z in crop units
    scores: F32  # [52] blendshape scores 0..1
    presence: float  # face-presence probability of the landmark model
    ms: float

    @property
    def units(self) -> dict[str, float]:
        return action_units(self.scores)


def _crop_matrix(centre: tuple[float, float], side: float, angle: float) -> F32:
    """2x3 matrix mapping crop pixels (0..CROP) to image pixels: rotated by `angle` (radians)."""
    c, s = math.cos(angle), math.sin(angle)
    k = side / CROP
    cx, cy = centre
    # image = centre + R @ (k * (u - CROP/2), k * (v - CROP/2))
    return np.array(
        [
            [c * k, -s * k, cx - c * k * CROP / 2 + s * k * CROP / 2],
            [s * k, c * k, cy - s * k * CROP / 2 - c * k * CROP / 2],
        ],
        np.float32,
    )


class FaceActionModel:
    """Landmarks + blendshapes of faces (stateless; shared sessions).

    Args:
        landmarks: ONNX Runtime session of mp_face_landmarks_detector.
        blendshapes: session of mp_face_blendshapes.
        scale: crop side as a multiple of the box (first pass) or landmark extent (second).
    """

    def __init__(self, landmarks: Any, blendshapes: Any, scale: float = 1.5) -> None:
        self.landmarks = landmarks
        self.blendshapes = blendshapes
        self.scale = scale
        self._lm_in = landmarks.get_inputs()[0].name
        self._bs_in = blendshapes.get_inputs()[0].name

    def _mesh(self, image: U8, m: F32, bgr: bool = False) -> tuple[F32, float]:
        """478 landmarks (image pixels) of the crop that `m` (crop -> image) describes."""
        crop = cv2.warpAffine(
            image,
            m,
            (CROP, CROP),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        if bgr:  # the model reads RGB; converting the 256x256 crop is cheaper than the frame
            crop = crop[:, :, ::-1]
        x = (crop.astype(np.float32) / 255.0)[None]
        pts, presence = self.landmarks.run(None, {self._lm_in: x})[:2]
        lm = np.asarray(pts, np.float32).reshape(478, 3)
        xy = lm[:, :2] @ m[:, :2].T + m[:, 2]
        out = np.concatenate([xy, lm[:, 2:] * (m[0, 0] ** 2 + m[1, 0] ** 2) ** 0.5], axis=1)
        p = 1.0 / (1.0 + math.exp(-float(np.asarray(presence).ravel()[0])))
        return out.astype(np.float32), p

    def __call__(
        self,
        image_rgb: U8,
        box: F32,
        eyes: F32,
        prior: tuple[F32, F32] | None = None,
        bgr: bool = False,
    ) -> FacialActions:
        """Facial actions of one face.

        Args:
            image_rgb: the frame, RGB uint8 (BGR with `bgr`).
            box: the detector box x1, y1, x2, y2 (pixels).
            eyes: [2, 2] the detector's two eye landmarks (image-left, image-right).
            prior: (box, landmarks) of this face's last facial actions, if recent: the crop is
                then made around those landmarks, moved with the box (one landmark pass instead
                of two, as MediaPipe tracks between frames).
            bgr: the frame is BGR (as decoded), not RGB.
        """
        t0 = time.perf_counter()
        x1, y1, x2, y2 = (float(v) for v in box)
        if prior is None:
            angle = math.atan2(float(eyes[1, 1] - eyes[0, 1]), float(eyes[1, 0] - eyes[0, 0]))
            side = self.scale * max(x2 - x1, y2 - y1)
            m = _crop_matrix(((x1 + x2) / 2, (y1 + y2) / 2), side, angle)
            lm, _ = self._mesh(image_rgb, m, bgr)
        else:
            pbox, plm = prior
            shift = np.array(
                [(x1 + x2 - pbox[0] - pbox[2]) / 2, (y1 + y2 - pbox[1] - pbox[3]) / 2], np.float32
            )
            lm = plm.copy()
            lm[:, :2] += shift
        # The landmark pass proper: around the landmarks' extent, levelled by the eye corners.
        lm, presence = self._mesh(image_rgb, self._crop_around(lm), bgr)
        pts = lm[BLENDSHAPE_LANDMARKS, :2][None].astype(np.float32)
        (scores,) = self.blendshapes.run(None, {self._bs_in: pts})[:1]
        sc = np.clip(np.asarray(scores, np.float32).reshape(52), 0.0, 1.0)
        return FacialActions(lm, sc, presence, (time.perf_counter() - t0) * 1e3)

    def _crop_around(self, lm: F32) -> F32:
        """The crop (crop -> image matrix) around landmarks, levelled by the outer eye corners."""
        a, b = lm[EYE_OUTER[0], :2], lm[EYE_OUTER[1], :2]
        angle = math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))
        c, s = math.cos(-angle), math.sin(-angle)
        rot = lm[:, :2] @ np.array([[c, s], [-s, c]], np.float32)  # into the levelled frame
        lo, hi = rot.min(axis=0), rot.max(axis=0)
        mid = (lo + hi) / 2
        centre = mid @ np.array([[c, -s], [s, c]], np.float32)  # back to image coordinates
        side = self.scale * float(max(hi - lo))
        return _crop_matrix((float(centre[0]), float(centre[1])), side, angle)


class ActionSmoother:
    """Exponential smoothing of each face's scores in media time (time constant `tau_s`);
    a face unseen for `reset_after_s` starts afresh."""

    def __init__(self, tau_s: float = 0.3, reset_after_s: float = 2.0) -> None:
        self.tau_s = tau_s
        self.reset_after_s = reset_after_s
        self._state: dict[int, tuple[float, F32]] = {}

    def update(self, face: int, t: float, scores: F32) -> F32:
        prev = self._state.get(face)
        if prev is None or t - prev[0] > self.reset_after_s or t < prev[0] or self.tau_s <= 0:
            out = scores.copy()
        else:
            alpha = 1.0 - math.exp(-(t - prev[0]) / self.tau_s)
            out = (prev[1] + np.float32(alpha) * (scores - prev[1])).astype(np.float32)
        self._state[face] = (t, out)
        return out

    def latest(self, face: int) -> F32 | None:
        s = self._state.get(face)
        return None if s is None else s[1]

    def reset(self) -> None:
        self._state.clear()


class ActionScheduler:
    """Which faces get facial actions on a frame: each face at most `fps` times per second of
    media time, at most `per_frame` faces per frame, the longest-waiting first (round robin)."""

    def __init__(self, fps: float, per_frame: int) -> None:
        self.fps = fps
        self.per_frame = per_frame
        self._last: dict[int, float] = {}

    def plan(self, t: float, faces: list[int]) -> list[int]:
        if self.fps <= 0 or self.per_frame <= 0:
            return []
        due = [f for f in faces if t - self._last.get(f, -math.inf) >= 1.0 / self.fps - 1e-6]
        due.sort(key=lambda f: self._last.get(f, -math.inf))
        chosen = due[: self.per_frame]
        for f in chosen:
            self._last[f] = t
        return chosen

    def reset(self) -> None:
        self._last.clear()


class ActionModel(Protocol):
    """Landmarks + blendshapes of one face (`FaceActionModel`, or a fake in tests)."""

    def __call__(
        self,
        image_rgb: U8,
        box: F32,
        eyes: F32,
        prior: tuple[F32, F32] | None = ...,
        bgr: bool = ...,
    ) -> FacialActions: ...


class FaceActionTracker:
    """A video track's facial actions: which faces get the model on a frame (round robin at
    `fps` per face, at most `per_frame` per frame), each face's crop placed around its recent
    landmarks, and the scores smoothed per face."""

    def __init__(
        self, model: ActionModel, fps: float, per_frame: int, tau_s: float, reset_after_s: float
    ) -> None:
        self.model = model
        self.scheduler = ActionScheduler(fps, per_frame)
        self.smoother = ActionSmoother(tau_s, reset_after_s)
        self._prior: dict[int, tuple[float, F32, F32]] = {}

    def update(
        self, image_bgr: U8, t: float, faces: list[tuple[int, F32, F32]]
    ) -> dict[int, tuple[F32, bool]]:
        """Facial actions of a frame's faces ((number, box, [5, 2] landmarks) each).

        Returns:
            number -> (latest smoothed scores, computed on this frame) for every face that
            has scores so far.
        """
        due = set(self.scheduler.plan(t, [n for n, _, _ in faces]))
        out: dict[int, tuple[F32, bool]] = {}
        for number, box, landmarks in faces:
            fresh = False
            if number in due:
                prior = self._prior.get(number)
                near = prior[1:] if prior and t - prior[0] <= ACTION_PRIOR_S else None
                fa = self.model(image_bgr, box, landmarks[:2], near, bgr=True)
                if fa.presence >= 0.5:
                    self._prior[number] = (t, box, fa.landmarks)
                    self.smoother.update(number, t, fa.scores)
                    fresh = True
            latest = self.smoother.latest(number)
            if latest is not None:
                out[number] = (latest, fresh)
        return out

    def landmarks(self, number: int, t: float) -> F32 | None:
        """The [478, 3] landmarks of face `number` if the model ran on it at time `t`."""
        prior = self._prior.get(number)
        return prior[2] if prior is not None and prior[0] == t else None

    def reset(self) -> None:
        self.scheduler.reset()
        self.smoother.reset()
        self._prior.clear()
