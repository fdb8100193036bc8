"""Face embeddings for re-identification: aligned crops in, L2-normalised vectors out."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.core.types import F32, U8, FaceDetections
from stream.models.preprocess import to_tensor
from stream.models.registry import ModelSpec
from stream.vision.align import align_faces


class FaceEmbedder:
    """MobileFaceNet (or any model with the same manifest `io`) on 5-point aligned faces."""

    def __init__(self, session: Any, spec: ModelSpec) -> None:
        self.session = session
        self.spec = spec
        self.io = spec.io
        self.size = spec.io.size[0] or 112
        self.output = spec.io.output or None

    def embed_aligned(self, aligned_bgr: U8) -> F32:
        """Embed already aligned [N, size, size, 3] BGR crops; returns [N, D] unit vectors."""
        if len(aligned_bgr) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        x = to_tensor(aligned_bgr, self.io)
        out = self.session.run([self.output] if self.output else None, {self.io.input: x})[0]
        out = np.asarray(out, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.maximum(norms, 1e-9), dtype=np.float32)

    def __call__(self, image: U8, faces: FaceDetections) -> F32:
        """Embed the given faces of a BGR frame."""
        return self.embed_aligned(align_faces(image, faces, self.size))
