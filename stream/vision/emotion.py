"""Expression classification: face crops in, canonical probabilities and valence/arousal out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.core.errors import ModelError
from stream.core.labels import LABEL_INDEX, LABELS, canonical, estimate_valence_arousal
from stream.core.types import F32, U8, EmotionScores, FaceDetections
from stream.models.preprocess import to_tensor
from stream.models.registry import ModelSpec
from stream.vision.align import crop_squares


def softmax(x: F32) -> F32:
    """Row-wise softmax."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


class EmotionModel:
    """One expression model described entirely by its manifest entry.

    The model's own label order is mapped onto the canonical order; labels it lacks are marked
    unsupported. Optional `valence_index`/`arousal_index` read regressed valence/arousal from
    the same output.
    """

    def __init__(self, session: Any, spec: ModelSpec) -> None:
        io = spec.io
        if not io.labels:
            raise ModelError(f"manifest entry {spec.name}: emotion models need io.labels")
        if io.size[0] <= 0 or io.size[1] <= 0:
            raise ModelError(f"manifest entry {spec.name}: emotion models need io.size")
        try:
            order = [LABEL_INDEX[canonical(name)] for name in io.labels]
        except ValueError as exc:
            raise ModelError(f"manifest entry {spec.name}: {exc}") from None
        if len(set(order)) != len(order):
            raise ModelError(f"manifest entry {spec.name}: io.labels has duplicates")
        self.session = session
        self.spec = spec
        self.io = io
        self.order = np.asarray(order, dtype=np.intp)
        self.supported = np.zeros(len(LABELS), dtype=bool)
        self.supported[self.order] = True
        self.has_va = io.valence_index >= 0 and io.arousal_index >= 0
        self.output = io.output or None

    def predict_crops(self, crops_bgr: U8) -> tuple[F32, F32 | None]:
        """Classify [N, S, S, 3] BGR crops at the model's size.

        Returns:
            ([N, 8] canonical probabilities, [N, 2] regressed valence/arousal or None).
        """
        x = to_tensor(crops_bgr, self.io)
        raw = self.session.run([self.output] if self.output else None, {self.io.input: x})[0]
        raw = np.asarray(raw, dtype=np.float32).reshape(len(crops_bgr), -1)
        k = len(self.order)
        scores = raw[:, :k]
        probs = softmax(scores) if self.io.activation == "logits" else scores
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-9)
        out = np.zeros((len(raw), len(LABELS)), dtype=np.float32)
        out[:, self.order] = probs
        va = None
        if self.has_va:
            va = np.clip(raw[:, [self.io.valence_index, self.io.arousal_index]], -1, 1)
        return out, va

    def crops(self, image: U8, faces: FaceDetections) -> U8:
        """Square crops of the faces at this model's input size."""
        return crop_squares(image, faces.boxes, self.io.size[0], self.io.crop)


@dataclass(frozen=True)
class Member:
    """An ensemble member and its weight."""

    model: EmotionModel
    weight: float


class EmotionEnsemble:
    """Weighted average of expression models over the labels each supports.

    For every label, the ensemble probability is the weighted mean over the members that
    support it, then renormalised; the ensemble supports the union of its members' labels.
    Valence/arousal come from members that regress them (weighted mean), else they are
    estimated from the probabilities with the circumplex table and flagged as estimated.
    """

    def __init__(self, members: list[Member]) -> None:
        if not members:
            raise ModelError("the emotion ensemble needs at least one model")
        self.members = members
        self.supported = np.zeros(len(LABELS), dtype=bool)
        for m in members:
            self.supported |= m.model.supported

    def __call__(self, image: U8, faces: FaceDetections) -> EmotionScores:
        """Score the expressions of the given faces in a BGR frame."""
        n = len(faces)
        total = np.zeros((n, len(LABELS)), dtype=np.float32)
        weight = np.zeros(len(LABELS), dtype=np.float32)
        va_sum = np.zeros((n, 2), dtype=np.float32)
        va_w = 0.0
        crops_by_key: dict[tuple[int, float], U8] = {}
        for m in self.members:
            if n == 0:
                break
            key = (m.model.io.size[0], m.model.io.crop)
            if key not in crops_by_key:
                crops_by_key[key] = m.model.crops(image, faces)
            probs, va = m.model.predict_crops(crops_by_key[key])
            total += m.weight * probs
            weight += m.weight * m.model.supported
            if va is not None:
                va_sum += m.weight * va
                va_w += m.weight
        probs = np.where(weight > 0, total / np.maximum(weight, 1e-9), 0.0).astype(np.float32)
        probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-9)
        if va_w > 0:
            va_out = (va_sum / va_w).astype(np.float32)
            estimated = False
        else:
            va_out = estimate_valence_arousal(probs, self.supported)
            estimated = True
        return EmotionScores(probs, self.supported.copy(), va_out, estimated)
