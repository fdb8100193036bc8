"""Mouth measurements per face (for matching faces to voices): a small normalised lip patch."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.core.types import F32, U8

_MW, _MH = 24, 12  # mouth patch size


def mouth_patch(image: U8, landmarks: F32) -> F32:
    """A small, normalised grey patch around the mouth, rotated with the mouth-corner line."""
    left, right = landmarks[3].astype(np.float64), landmarks[4].astype(np.float64)
    centre = (left + right) / 2
    d = right - left
    width = max(float(np.hypot(*d)), 1.0)
    angle = np.arctan2(d[1], d[0])
    # Patch spans 1.4x the corner distance across and 0.9x down/up from just above the lips.
    sx, sy = 1.4 * width / _MW, 0.9 * width / _MH
    c, s = np.cos(angle), np.sin(angle)
    top_left = centre + np.array(
        [-0.7 * width * c + 0.3 * width * s, -0.7 * width * s - 0.3 * width * c]
    )
    m = np.array([[c * sx, -s * sy, top_left[0]], [s * sx, c * sy, top_left[1]]], np.float64)
    colour = cv2.warpAffine(
        image,
        m,
        (_MW, _MH),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # Grey only the 24x12 patch: converting the whole frame per face cost more than the rest.
    patch = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32)
    patch -= patch.mean()
    return np.asarray(patch / max(float(patch.std()), 1.0), np.float32)


@dataclass(frozen=True)
class MouthSample:
    """Mouth measurements of one face in one frame."""

    motion: float  # mean absolute change of the mouth patch since the previous frame
    openness: float  # mean of the patch's inner band (dark gap or bright teeth when open)


class MouthActivity:
    """Mouth measurements per face, from the two mouth-corner landmarks."""

    def __init__(self, max_gap_s: float = 0.3) -> None:
        self.max_gap_s = max_gap_s
        self._last: dict[int, tuple[float, F32]] = {}

    def update(self, t: float, image: U8, number: int, landmarks: F32) -> MouthSample | None:
        """Measure a face's mouth; None on its first frame or after a gap."""
        patch = mouth_patch(image, landmarks)
        prev = self._last.get(number)
        self._last[number] = (t, patch)
        if prev is None or t - prev[0] > self.max_gap_s or t <= prev[0]:
            return None
        inner = patch[_MH // 3 : 2 * _MH // 3 + 1, _MW // 4 : 3 * _MW // 4]
        return MouthSample(float(np.abs(patch - prev[1]).mean()), float(inner.mean()))

    def reset(self) -> None:
        self._last.clear()
