"""Face quality for the re-identification gallery: size, sharpness and head pose."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.core.config import TrackingConfig
from stream.core.types import F32, U8


@dataclass(frozen=True)
class Quality:
    """Quality measurements of one face."""

    size_px: float
    sharpness: float
    yaw: float
    ok: bool


def yaw_proxy(landmarks: F32) -> float:
    """Horizontal nose offset from the eye midpoint, in inter-eye distances (0 = frontal)."""
    eyes = landmarks[:2]
    mid = eyes.mean(axis=0)
    dist = float(np.linalg.norm(eyes[1] - eyes[0]))
    return float(abs(landmarks[2, 0] - mid[0]) / max(dist, 1e-6))


def sharpness(aligned_bgr: U8) -> float:
    """Variance of the Laplacian over the aligned face (low = blurred)."""
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


class QualityGate:
    """Decides which embeddings are good enough to enter an identity's gallery."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config

    def __call__(self, aligned_bgr: U8, landmarks: F32, size_px: float) -> Quality:
        c = self.config
        sharp = sharpness(aligned_bgr)
        yaw = yaw_proxy(landmarks)
        ok = size_px >= c.quality_min_face_px and sharp >= c.quality_min_sharpness
        ok = ok and yaw <= c.quality_max_yaw
        return Quality(size_px, sharp, yaw, ok)
