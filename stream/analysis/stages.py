"""The models of a process, loaded once, and the per-stream stages built over them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from stream.core.config import Config
from stream.core.errors import ModelError
from stream.core.labels import LABELS
from stream.core.types import VideoFrame
from stream.models.runtime import SessionFactory, make_factory
from stream.vision.blendshapes import FaceActionModel
from stream.vision.pipeline import FrameResult, VisionModels, VisionPipeline
from stream.vision.signals import FrameSignals
from stream.vision.tracker import Numbering
from stream.voice.analyzer import VoiceAnalyzer, VoiceUpdate
from stream.voice.speaker_embed import SpeakerEmbedder


class VisionStage(Protocol):
    """A track's vision stages (VisionPipeline): identities, expressions, mouths, facial actions."""

    excluded: set[int]

    def process(
        self,
        frame: VideoFrame,
        detect: bool = ...,
        emotion_for: set[int] | None = ...,
        actions: bool = ...,
        coarse: bool = ...,
        mouths: bool = ...,
    ) -> FrameResult: ...

    def reset(self) -> None: ...

    def flush_behaviour(self) -> FrameSignals: ...

    def tracker_numbers(self) -> list[int]: ...


class VoiceStage(Protocol):
    """A speaker's voice chain (VoiceAnalyzer): audio frames in, VAD/prosody out."""

    def feed_many(self, frames: list[Any]) -> VoiceUpdate: ...


class StageSource(Protocol):
    """What a per-stream analysis needs from the process: its stages and what they support."""

    config: Config

    @property
    def supported(self) -> np.ndarray: ...

    @property
    def supported_labels(self) -> list[str]: ...

    @property
    def va_estimated(self) -> bool: ...

    @property
    def model_names(self) -> list[str]: ...

    def vision(
        self, config: Config | None = None, numbering: Numbering | None = None, live: bool = ...
    ) -> VisionStage: ...

    def voice(self) -> VoiceStage: ...


class Stages:
    """Loads and verifies every configured model once (errors show at start, the first stream
    does not wait) and builds each stream's stateful stages over the shared sessions.

    Args:
        config: the configuration (model names, thresholds).
        factory: shares ONNX Runtime sessions; built from `config` if omitted.
        voice: also load the voice models (when `audio.enabled`).
    """

    def __init__(
        self, config: Config, factory: SessionFactory | None = None, voice: bool | None = None
    ) -> None:
        self.config = config
        self.factory = factory or make_factory(config)
        self.vision_models = VisionModels.from_config(config, self.factory)
        with_voice = config.audio.enabled if voice is None else voice
        if with_voice:
            for name in (config.models.vad, config.models.pitch):
                self.factory.get(name)
        #: Voice prints for diarization (None: off or no voice analysis).
        self.speaker_embedder: SpeakerEmbedder | None = None
        if with_voice and config.diarization.enabled:
            self.speaker_embedder = SpeakerEmbedder(
                self.factory.get(self._model(config.diarization.model, "speaker"))
            )
        b = config.behaviour
        if b.enabled and (b.posture or b.posture_live):
            # Loaded here, before any frame is held, not by the first video track's pipeline:
            # its load on top of the first frames was the peak of a one-face file's memory.
            self.factory.get(b.posture_model)
        #: Landmarks + blendshapes per face (None: facial actions off).
        self.action_model: FaceActionModel | None = None
        if config.actions.enabled:
            a = config.actions
            self.action_model = FaceActionModel(
                self.factory.get(self._model(a.landmarks_model, "landmarks")),
                self.factory.get(self._model(a.blendshapes_model, "blendshapes")),
            )

    def _model(self, name: str, task: str) -> str:
        spec = self.factory.store.manifest[name]
        if spec.task != task:
            raise ModelError(f"{name} is a {spec.task} model, not a {task} model")
        return name

    @property
    def supported(self) -> np.ndarray:
        """[8] bool: the labels the expression ensemble can output."""
        return self.vision_models.emotion.supported

    @property
    def supported_labels(self) -> list[str]:
        return [lab for lab, s in zip(LABELS, self.supported, strict=True) if s]

    @property
    def va_estimated(self) -> bool:
        """True when valence/arousal come from the label table, not from a model output."""
        return not any(m.model.has_va for m in self.vision_models.emotion.members)

    @property
    def model_names(self) -> list[str]:
        return self.vision_models.names

    def vision(
        self, config: Config | None = None, numbering: Numbering | None = None, live: bool = False
    ) -> VisionPipeline:
        """A vision pipeline with fresh identity, facial-action and behaviour state (one per
        video track; `live` tracks use the live posture setting)."""
        return VisionPipeline.from_models(
            self.vision_models, config or self.config, numbering, self.action_model, live
        )

    def voice(self) -> VoiceAnalyzer:
        """A voice analyser with fresh state (one per speaker track)."""
        m = self.config.models
        return VoiceAnalyzer(self.factory, self.config.audio, m.vad, m.pitch)
