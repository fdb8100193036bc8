"""The vision pipeline: frame in -> detection -> identity -> expression -> smoothing -> result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.aggregate import FaceSample
from stream.config import Config
from stream.detect import YuNetDetector
from stream.embed import FaceEmbedder
from stream.emotion import EmotionEnsemble, EmotionModel, Member
from stream.errors import ModelError
from stream.registry import Manifest, ModelStore
from stream.runtime import SessionFactory
from stream.smoothing import ExpressionSmoother
from stream.tracker import IdentityTracker
from stream.types import F32, FaceDetections, VideoFrame


@dataclass(frozen=True)
class FaceResult:
    """One identified face in one analysed frame."""

    number: int
    box: F32  # pixels x1, y1, x2, y2
    landmarks: F32  # [5, 2] pixels
    score: float
    raw_probs: F32  # [8] this frame's ensemble output
    sample: FaceSample  # smoothed label, confidence, probabilities, valence/arousal


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline found in one frame."""

    t: float
    width: int
    height: int
    faces: list[FaceResult]
    detections: FaceDetections
    timings_ms: dict[str, float] = field(default_factory=dict)
    embedded: int = 0


class VisionPipeline:
    """Runs the vision stages on frames; one instance per stream (it holds identity state).

    Args:
        detector, tracker, emotion, smoother: the stages (see `from_config` for the defaults).
        excluded: face numbers whose expression is never computed.
    """

    def __init__(
        self,
        detector: YuNetDetector,
        tracker: IdentityTracker,
        emotion: EmotionEnsemble,
        smoother: ExpressionSmoother,
    ) -> None:
        self.detector = detector
        self.tracker = tracker
        self.emotion = emotion
        self.smoother = smoother
        self.excluded: set[int] = set()

    @classmethod
    def from_config(cls, config: Config, factory: SessionFactory | None = None) -> VisionPipeline:
        """Build the pipeline from the config; sessions come from (and are shared via) `factory`."""
        factory = factory or make_factory(config)
        manifest = factory.store.manifest
        det_spec = manifest[config.models.detector]
        if det_spec.task != "detection":
            raise ModelError(f"models.detector = {det_spec.name} is not a detection model")
        emb_spec = manifest[config.models.embedder]
        if emb_spec.task != "embedding":
            raise ModelError(f"models.embedder = {emb_spec.name} is not an embedding model")
        detector = YuNetDetector(factory.get(det_spec.name), det_spec, config.detection)
        embedder = FaceEmbedder(factory.get(emb_spec.name), emb_spec)
        members = []
        for m in config.emotion.ensemble:
            spec = manifest[m.model]
            if spec.task != "emotion":
                raise ModelError(f"emotion.ensemble: {spec.name} is not an emotion model")
            members.append(Member(EmotionModel(factory.get(spec.name), spec), m.weight))
        tracker = IdentityTracker(config.tracking, embedder.embed_aligned)
        return cls(
            detector, tracker, EmotionEnsemble(members), ExpressionSmoother(config.smoothing)
        )

    def reset(self) -> None:
        """Start a new session: identities, smoothing and exclusions are forgotten."""
        self.tracker.reset()
        self.smoother.reset()
        self.excluded.clear()

    def process(self, frame: VideoFrame) -> FrameResult:
        """Analyse one frame."""
        t0 = time.perf_counter()
        dets = self.detector(frame)
        t1 = time.perf_counter()
        dets = self.tracker.update(frame, dets)
        t2 = time.perf_counter()
        ids = dets.track_ids
        keep = np.nonzero((ids > 0) & ~np.isin(ids, list(self.excluded)))[0]
        faces = dets.select(keep)
        scores = self.emotion(frame.image, faces)
        t3 = time.perf_counter()
        w, h = frame.width, frame.height
        results = []
        for k in range(len(faces)):
            number = int(faces.track_ids[k])
            sm = self.smoother.update(number, frame.t, scores.probs[k], scores.valence_arousal[k])
            x1, y1, x2, y2 = (float(v) for v in faces.boxes[k])
            sample = FaceSample(
                number=number,
                label=sm.label,
                confidence=sm.confidence,
                probs=sm.probs,
                raw_probs=scores.probs[k],
                valence_arousal=sm.valence_arousal,
                box=(x1 / w, y1 / h, x2 / w, y2 / h),
            )
            results.append(
                FaceResult(
                    number,
                    faces.boxes[k],
                    faces.landmarks[k],
                    float(faces.scores[k]),
                    scores.probs[k],
                    sample,
                )
            )
        t4 = time.perf_counter()
        timings = {
            "detect": (t1 - t0) * 1e3,
            "track": (t2 - t1) * 1e3,
            "emotion": (t3 - t2) * 1e3,
            "smooth": (t4 - t3) * 1e3,
            "total": (t4 - t0) * 1e3,
        }
        return FrameResult(frame.t, w, h, results, dets, timings, self.tracker.last_stats.embedded)

    @property
    def va_estimated(self) -> bool:
        return not any(m.model.has_va for m in self.emotion.members)


def make_factory(config: Config) -> SessionFactory:
    """Session factory over the configured models folder and manifest."""
    manifest = Manifest.load(Path(config.models.manifest) if config.models.manifest else None)
    store = ModelStore(config.models_dir(), manifest, verify=config.models.verify)
    return SessionFactory(store, config.runtime)
