"""The vision pipeline: frame in -> detection -> identity -> expression -> smoothing -> facial
actions -> result."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream.core.config import Config
from stream.core.errors import ModelError
from stream.core.helpers import helper
from stream.core.types import F32, U8, EmotionScores, FaceDetections, FaceSample, VideoFrame
from stream.models.runtime import SessionFactory, make_factory
from stream.vision.blendshapes import ActionModel, FaceActionTracker
from stream.vision.detect import YuNetDetector
from stream.vision.embed import FaceEmbedder
from stream.vision.emotion import EmotionEnsemble, EmotionModel, Member
from stream.vision.flow import FlowPropagator
from stream.vision.gaze import AttentionDrop
from stream.vision.gestures import HeadGesture
from stream.vision.mouth import MouthActivity, MouthSample
from stream.vision.signals import BehaviourSignals, FaceInput, FaceSignals, FrameSignals
from stream.vision.smoothing import ExpressionSmoother
from stream.vision.tracker import IdentityTracker, Numbering

#: A coarse detection (`process(coarse=True)`) runs on the whole frame instead when a followed
#: face would be smaller than this there (pixels).
COARSE_MIN_FACE_PX = 48


@dataclass(frozen=True)
class FaceResult:
    """One identified face in one analysed frame."""

    number: int
    box: F32  # pixels x1, y1, x2, y2
    landmarks: F32  # [5, 2] pixels
    score: float
    raw_probs: F32  # [8] the latest ensemble output for this face
    sample: FaceSample  # smoothed label, confidence, probabilities, valence/arousal
    fresh: bool = True  # expression computed on this frame (else carried over)
    mouth: MouthSample | None = None  # mouth measurements for speaker matching
    actions: F32 | None = None  # [52] smoothed blendshape scores (facial actions), if computed
    actions_fresh: bool = False  # the facial actions were computed on this frame
    signals: FaceSignals | None = None  # head pose, gaze/attention, posture (behaviour on)


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
    emotions: int = 0
    excluded: list[tuple[int, F32]] = field(default_factory=list)
    #: Nods/shakes and attention drops that ended on this frame (behaviour on).
    behaviour_events: list[HeadGesture | AttentionDrop] = field(default_factory=list)


class Detector(Protocol):
    """Finds faces in a frame (`YuNetDetector`, or a fake in tests)."""

    def __call__(self, frame: VideoFrame) -> FaceDetections: ...


class ExpressionModel(Protocol):
    """Scores the expressions of faces (`EmotionEnsemble`, or a fake in tests)."""

    def __call__(self, image: U8, faces: FaceDetections) -> EmotionScores: ...


@dataclass(frozen=True)
class VisionModels:
    """The stateless vision stages (detector, embedder, expression ensemble), loaded once and
    shared by every stream's pipeline."""

    factory: SessionFactory
    detector: YuNetDetector
    embedder: FaceEmbedder
    emotion: EmotionEnsemble

    @classmethod
    def from_config(cls, config: Config, factory: SessionFactory | None = None) -> VisionModels:
        """Load (and verify) the configured models.

        Raises:
            ModelError: a model is missing, corrupt, or of the wrong kind for its stage.
        """
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
        return cls(factory, detector, embedder, EmotionEnsemble(members))

    @property
    def names(self) -> list[str]:
        """Manifest names of the loaded models (expression models first)."""
        return [m.model.spec.name for m in self.emotion.members] + [
            self.detector.spec.name,
            self.embedder.spec.name,
        ]


class VisionPipeline:
    """Runs the vision stages on frames; one instance per stream (it holds identity state).

    Args:
        detector, tracker, emotion, smoother: the stages (see `from_config` for the defaults).
        actions: facial actions of the faces (None: off).
        signals: behaviour signals of the faces (None: off).
        signal_landmarks: give the signals the facial-action landmarks when fresh (False
            when the action model has no real face mesh, e.g. fakes: 5-point pose only).
        overlap: run the expression model in a helper thread while facial actions and
            behaviour signals are computed, and head tracking's optical flow in another while
            facial actions are (same results; ONNX Runtime and OpenCV release the GIL, so a
            second core is used). Files turn it on; live tracks leave it off (their
            budget measures each stage on the inference threads).
        coarse: the detector on frames scaled to a smaller side, and that side, for coarse
            detections (None: every detection runs at full scale).
    """

    def __init__(
        self,
        detector: Detector,
        tracker: IdentityTracker,
        emotion: ExpressionModel,
        smoother: ExpressionSmoother,
        actions: FaceActionTracker | None = None,
        signals: BehaviourSignals | None = None,
        signal_landmarks: bool = True,
        overlap: bool = False,
        coarse: tuple[Detector, int] | None = None,
    ) -> None:
        self.detector = detector
        self.tracker = tracker
        self.emotion = emotion
        self.smoother = smoother
        self.actions = actions
        self.signals = signals
        self.signal_landmarks = signal_landmarks
        self.flow = FlowPropagator()
        self.mouth = MouthActivity()
        #: Face numbers whose expression is never computed (shared with the stream's tracks).
        self.excluded: set[int] = set()
        self._samples: dict[int, FaceSample] = {}
        self._last: FaceDetections | None = None
        self._last_grey: U8 = np.zeros((1, 1), np.uint8)
        self.overlap = overlap
        self.coarse = coarse
        # The detector already running on coming frames (`detect_ahead`), in its own thread,
        # and whether coarsely.
        self._ahead: list[tuple[VideoFrame, bool, Future[FaceDetections]]] = []

    @classmethod
    def from_config(
        cls,
        config: Config,
        factory: SessionFactory | None = None,
        numbering: Numbering | None = None,
    ) -> VisionPipeline:
        """Build the pipeline from the config; sessions come from (and are shared via) `factory`."""
        return cls.from_models(VisionModels.from_config(config, factory), config, numbering)

    @classmethod
    def from_models(
        cls,
        models: VisionModels,
        config: Config,
        numbering: Numbering | None = None,
        action_model: ActionModel | None = None,
        live: bool = False,
    ) -> VisionPipeline:
        """A pipeline with fresh identity and smoothing state over already loaded models
        (facial actions when `action_model` is given and `actions.enabled`; behaviour signals
        when `behaviour.enabled`, posture as `behaviour.posture` / `posture_live` say).

        Raises:
            ModelError: behaviour is on and its models are missing.
        """
        tracker = IdentityTracker(
            config.tracking, models.embedder.embed_aligned, numbering=numbering
        )
        side = config.analyze.coarse_max_side
        coarse = None
        if not live and 0 < side < config.detection.max_side and models.detector.fixed_size is None:
            d = dataclasses.replace(config.detection, max_side=side)
            coarse = (YuNetDetector(models.detector.session, models.detector.spec, d), side)
        return cls(
            models.detector,
            tracker,
            models.emotion,
            ExpressionSmoother(config.smoothing),
            face_actions(config, action_model),
            BehaviourSignals.from_config(config, models.factory, live)
            if config.behaviour.enabled
            else None,
            overlap=not live,
            coarse=coarse,
        )

    def reset(self) -> None:
        """Start a new session: identities, smoothing and exclusions are forgotten."""
        self.tracker.reset()
        self.smoother.reset()
        self.excluded.clear()
        self._samples.clear()
        self.mouth.reset()
        if self.actions is not None:
            self.actions.reset()
        if self.signals is not None:
            self.signals.reset()
        self._last = None
        self._ahead.clear()

    def detect_ahead(self, frame: VideoFrame, coarse: bool = False) -> None:
        """Start the detector on a frame that comes next, in a helper thread (files: it runs
        while this frame's faces are analysed). When that frame is processed with detection
        (as coarse) its faces come from this run, the same as running the detector then;
        unused runs are dropped."""
        coarse = self._coarse(frame, coarse)
        run = helper("detect-ahead").submit(self._detector(coarse), frame)
        self._ahead = [*self._ahead[-1:], (frame, coarse, run)]

    def _coarse(self, frame: VideoFrame, coarse: bool) -> bool:
        """Whether a detection asked to be coarse is: every followed face large enough at the
        coarse scale (decided on the last frame's faces: results, not times)."""
        if not coarse or self.coarse is None or self._last is None or not len(self._last):
            return False
        scale = min(1.0, self.coarse[1] / max(frame.width, frame.height))
        sides = (self._last.boxes[:, 2:] - self._last.boxes[:, :2]).min(axis=1)
        return float(sides.min()) * scale >= COARSE_MIN_FACE_PX

    def _detector(self, coarse: bool) -> Detector:
        return self.coarse[0] if coarse and self.coarse is not None else self.detector

    def _detect(self, frame: VideoFrame, coarse: bool = False) -> FaceDetections:
        """The detector's faces on `frame` (from `detect_ahead` when it was started on it)."""
        coarse = self._coarse(frame, coarse)
        mine = [run for f, c, run in self._ahead if f is frame and c == coarse]
        # Runs on this frame or on frames passed over are done with.
        self._ahead = [a for a in self._ahead if a[0] is not frame and a[0].t > frame.t]
        return mine[0].result() if mine else self._detector(coarse)(frame)

    def process(
        self,
        frame: VideoFrame,
        detect: bool = True,
        emotion_for: set[int] | None = None,
        actions: bool = True,
        coarse: bool = False,
        mouths: bool = True,
    ) -> FrameResult:
        """Analyse one frame.

        Args:
            frame: the frame.
            detect: run the detector and identity tracker; when False, the previous frame's
                faces are moved along the optical flow and keep their IDs (cheap in-between
                frames under a tight budget). The first frame always detects.
            emotion_for: face numbers whose expression is computed on this frame (None: all);
                the others keep their last smoothed expression.
            actions: compute facial actions for the faces due now (False: faces carry none,
                e.g. frames analysed only to follow faces and sample mouths).
            coarse: detect on the frame scaled to the coarse side (when the pipeline has a
                coarse detector and the faces stay large enough there).
            mouths: measure mouths (for matching voices to faces; without a voice to match,
                a face's `mouth` is None: measuring took ~8% of a one-face file's main loop).
        """
        t0 = time.perf_counter()
        grey = self.flow.grey(frame.image)  # for the flow now and on the next frame
        full_grey = self.flow.full  # the frame in grey, for head tracking
        if detect or self._last is None or len(self._last) == 0:
            dets = self._detect(frame, coarse)
            t1 = time.perf_counter()
            dets = self.tracker.update(frame, dets)
            embedded = self.tracker.last_stats.embedded
        else:
            dets = self.flow.propagate(self._last_grey, grey, frame.image, self._last)
            self.tracker.follow(frame, dets)
            t1 = time.perf_counter()
            embedded = 0
        self._last = dets
        self._last_grey = grey
        t2 = time.perf_counter()
        ids = dets.track_ids
        excluded_mask = np.isin(ids, list(self.excluded))
        keep = np.nonzero((ids > 0) & ~excluded_mask)[0]
        faces = dets.select(keep)
        fresh = np.array(
            [
                emotion_for is None or int(n) in emotion_for or int(n) not in self._samples
                for n in faces.track_ids
            ],
            dtype=bool,
        )
        due = faces.select(fresh)
        pending: Future[tuple[EmotionScores, float]] | None = None
        scores: EmotionScores | None = None
        emotion_ms = 0.0
        if self.overlap and len(due):
            pending = helper("expression").submit(self._expressions, frame.image, due)
        else:
            scores, emotion_ms = self._expressions(frame.image, due)
        t3 = time.perf_counter()
        w, h = frame.width, frame.height
        faces_in = [
            (int(faces.track_ids[k]), faces.boxes[k], faces.landmarks[k]) for k in range(len(faces))
        ]
        head: Future[None] | None = None
        if self.overlap and self.signals is not None and faces_in and full_grey is not None:
            # Head tracking follows the faces meanwhile (the same numbers as in `_behaviour`).
            numbers = [n for n, _b, _lm in faces_in]
            head = helper("head-flow").submit(
                self.signals.head.prepare, frame.t, frame.image, full_grey, numbers
            )
        mouth: list[MouthSample | None] = [None] * len(faces_in)
        if mouths:
            mouth = [self.mouth.update(frame.t, frame.image, n, lm) for n, _b, lm in faces_in]
        t_mouth = time.perf_counter()
        timings: dict[str, float] = {}
        acts: dict[int, tuple[F32, bool]] = {}
        if actions and self.actions is not None and faces_in:
            acts = self._facial_actions(frame, faces_in, timings)
        signals: dict[int, FaceSignals] = {}
        events: list[HeadGesture | AttentionDrop] = []
        if head is not None:
            head.result()
        if self.signals is not None and faces_in:
            signals, events = self._behaviour(frame, faces_in, acts, timings, actions, full_grey)
        if pending is not None:
            scores, emotion_ms = pending.result()
        assert scores is not None
        t_wait = time.perf_counter()
        results = []
        j = 0
        for k, (number, b, lm) in enumerate(faces_in):
            x1, y1, x2, y2 = (float(v) for v in b)
            box = (x1 / w, y1 / h, x2 / w, y2 / h)
            if fresh[k]:
                raw = scores.probs[j]
                sm = self.smoother.update(number, frame.t, raw, scores.valence_arousal[j])
                j += 1
                sample = FaceSample(
                    number, sm.label, sm.confidence, sm.probs, raw, sm.valence_arousal, box
                )
            else:
                sample = dataclasses.replace(self._samples[number], box=box)
            self._samples[number] = sample
            a = acts.get(number)
            results.append(
                FaceResult(
                    number,
                    b,
                    lm,
                    float(faces.scores[k]),
                    sample.raw_probs,
                    sample,
                    bool(fresh[k]),
                    mouth[k],
                    None if a is None else a[0],
                    False if a is None else a[1],
                    signals.get(number),
                )
            )
        t5 = time.perf_counter()
        timings = {
            "detect" if detect else "flow": (t1 - t0) * 1e3,
            "track": (t2 - t1) * 1e3,
            "emotion": emotion_ms,
            "smooth": (t5 - t_wait + t_mouth - t3) * 1e3,
            **timings,
            "total": (t5 - t0) * 1e3,
        }
        excluded = [
            (int(n), dets.boxes[i]) for i, n in enumerate(ids) if excluded_mask[i] and n > 0
        ]
        return FrameResult(
            frame.t, w, h, results, dets, timings, embedded, int(fresh.sum()), excluded, events
        )

    def _expressions(self, image: U8, faces: FaceDetections) -> tuple[EmotionScores, float]:
        """The expression scores of `faces` and the milliseconds they took."""
        t0 = time.perf_counter()
        scores = self.emotion(image, faces)
        return scores, (time.perf_counter() - t0) * 1e3

    def _behaviour(
        self,
        frame: VideoFrame,
        faces: list[tuple[int, F32, F32]],
        acts: dict[int, tuple[F32, bool]],
        timings: dict[str, float],
        actions: bool,
        grey: U8 | None = None,
    ) -> tuple[dict[int, FaceSignals], list[HeadGesture | AttentionDrop]]:
        """The faces' behaviour signals, and the behaviour events that ended now (every
        analysed frame: head tracking between landmark passes follows consecutive frames)."""
        assert self.signals is not None
        t0 = time.perf_counter()
        tracker = self.actions if actions and self.signal_landmarks else None
        inputs = []
        for number, box, points in faces:
            fresh = number in acts and acts[number][1]
            lm = tracker.landmarks(number, frame.t) if tracker and fresh else None
            inputs.append(FaceInput(number, box, points, lm))
        fs = self.signals.update(frame.t, frame.image, inputs, grey=grey)
        timings["behaviour"] = (time.perf_counter() - t0) * 1e3
        return fs.faces, [*fs.gestures, *fs.drops]

    def flush_behaviour(self) -> FrameSignals:
        """Behaviour events still open (end of the media or session); none when off."""
        return self.signals.flush() if self.signals is not None else FrameSignals()

    def _facial_actions(
        self, frame: VideoFrame, faces: list[tuple[int, F32, F32]], timings: dict[str, float]
    ) -> dict[int, tuple[F32, bool]]:
        """The faces' latest smoothed facial actions (computed for the faces due now)."""
        assert self.actions is not None
        t0 = time.perf_counter()
        scores = self.actions.update(frame.image, frame.t, faces)
        timings["actions"] = (time.perf_counter() - t0) * 1e3
        return scores

    def tracker_numbers(self) -> list[int]:
        """Numbers of the faces in the last analysed frame (for budget planning)."""
        if self._last is None:
            return []
        return [int(n) for n in self._last.track_ids if n > 0 and int(n) not in self.excluded]


def face_actions(config: Config, model: ActionModel | None) -> FaceActionTracker | None:
    """A track's facial-action state over a shared model (None: no model or actions off)."""
    a = config.actions
    if model is None or not a.enabled:
        return None
    return FaceActionTracker(model, a.fps, a.per_frame, a.tau_s, config.smoothing.reset_after_s)
