"""One audio track's voice: denoise -> VAD -> prosody -> diarizer -> speaker matching.

Every source drives a track the same way, in three steps that may run on different threads:

    batch = track.collect(frame, received)      # light: batching and the track's clock
    analysed = track.analyse(batch)             # heavy: the voice models (a worker thread)
    updates = track.accept(analysed, until)     # light: match to faces, decide reports

`push` does all three (callers without a worker); `None` as the frame ends the input (the voice
chain and the diarizer are flushed). Reports are decided once video has reached their time
(`until`; files analyse audio ahead of video) or at once (`until = inf`, live).

Clocks: a file's audio starts `offset` seconds after its video (fixed). Live, each track has
its own media time, put on the receive clock: media time plus the earliest receive-minus-media
offset seen (audio arrives late with jitter, never early).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from stream.analysis.speaker import ActiveSpeaker, SpeakerMatcher
from stream.analysis.stages import VoiceStage
from stream.analysis.voices import Turn, Voices
from stream.core.config import Config
from stream.vision.mouth import MouthSample
from stream.voice.analyzer import VoiceUpdate
from stream.voice.diarize import DiarizationParams, Diarizer
from stream.voice.prosody import ProsodyReport

#: Audio fed to the voice models per call: batches are cheaper per second than single frames,
#: and 0.1 s keeps live prosody responsive.
AUDIO_BATCH_S = 0.1


class AudioBatcher:
    """Collects audio frames (PyAV or anything with `samples` and `sample_rate`) into batches of
    about `AUDIO_BATCH_S`; `None` (end of input) releases what is left, followed by None."""

    def __init__(self, seconds: float = AUDIO_BATCH_S) -> None:
        self.seconds = seconds
        self._batch: list[Any] = []
        self._s = 0.0

    def add(self, frame: Any) -> list[Any]:
        """Add a frame; returns a full batch (else an empty list)."""
        self._batch.append(frame)
        if frame is not None:
            self._s += frame.samples / frame.sample_rate
            if self._s + 1e-9 < self.seconds:
                return []
        batch, self._batch, self._s = self._batch, [], 0.0
        return batch


@dataclass(frozen=True)
class SpeakerUpdate:
    """One prosody report of a speaker and the face it was matched to."""

    speaker: str
    report: ProsodyReport
    active: ActiveSpeaker
    changed: bool  # the matched face, voice or speaking state differs from the previous update
    voice_id: int | None = None  # the diarized speaker (online), None: not diarized / silence
    voice_name: str | None = None  # "Speaker 2" or its new name
    voice_face: int | None = None  # the face this voice is linked to so far


@dataclass(frozen=True)
class AudioBatch:
    """Audio frames to analyse (the last one None at the end of input) and the track's audio
    time 0 on the analysis clock when they were collected."""

    frames: list[Any]
    offset: float


@dataclass(frozen=True)
class AnalysedAudio:
    """What the voice models made of a batch."""

    update: VoiceUpdate
    offset: float


def new_diarizer(config: Config, embedder: Any, online: bool) -> Diarizer | None:
    """A track's diarizer (None: no voice-print model, diarization off, or live without
    `diarization.live`)."""
    d = config.diarization
    if embedder is None or not d.enabled or (online and not d.live):
        return None
    params = DiarizationParams(
        window_s=d.window_s,
        hop_s=d.hop_s,
        max_speakers=d.max_speakers,
        neighbours=d.neighbours,
        min_turn_s=d.min_turn_s,
    )
    return Diarizer(embedder, params, online=online)


class VoiceTrack:
    """The voice analysis of one audio track (one speaker, or a room diarized into several).

    Args:
        name: the track ("audio" in files, the track id live).
        analyzer: the voice chain (`stages.voice()`).
        config: audio (matching) and diarization settings.
        embedder: voice prints for diarization (`stages.speaker_embedder`; None: off).
        voices: the stream's diarized speakers (numbers shared across tracks).
        online: give speaker IDs as audio arrives (live); files diarize at the end.
        keep_timeline: keep every decided report (for summaries and reports).
        offset: the track's audio time 0 on the analysis clock (files); live tracks take it
            from receive times (`collect(frame, received)`).
    """

    def __init__(
        self,
        name: str,
        analyzer: VoiceStage,
        config: Config,
        embedder: Any,
        voices: Voices,
        online: bool,
        keep_timeline: bool = True,
        offset: float = 0.0,
    ) -> None:
        a = config.audio
        self.name = name
        self.analyzer = analyzer
        self.config = config
        self.embedder = embedder
        self.voices = voices
        self.online = online
        self.keep_timeline = keep_timeline
        self.offset = offset
        self.matcher = SpeakerMatcher(a.match_window_s, a.match_threshold)
        self.diarizer = new_diarizer(config, embedder, online)
        self.timeline: list[tuple[ProsodyReport, ActiveSpeaker]] = []
        self.current = 0  # the diarizer's online speaker ID of the latest audio (0: none yet)
        self.audio_end = -1.0  # how far accepted audio reaches (track time)
        self._batcher = AudioBatcher()
        self._t0 = math.inf  # receive-clock time of the track's audio time 0 (live)
        self._samples = 0
        self._held: deque[tuple[float, ProsodyReport]] = deque()
        self._last: tuple[int | None, bool, int | None] | None = None

    # -- the three steps -------------------------------------------------------------------
    def collect(self, frame: Any, received: float | None = None) -> AudioBatch | None:
        """Add an audio frame (None: end of input); returns a full batch to analyse.

        Args:
            frame: a PyAV audio frame (or anything with `samples` and `sample_rate`).
            received: when it arrived (live): puts the track on the receive clock.
        """
        if frame is not None and received is not None:
            self.receive(frame, received)
        frames = self._batcher.add(frame)
        return AudioBatch(frames, self.offset) if frames else None

    def receive(self, frame: Any, received: float) -> float:
        """Put the track on the receive clock with a frame's arrival time (live); returns the
        offset: the receive-clock time of the track's audio time 0."""
        self._samples += frame.samples
        self._t0 = min(self._t0, received - self._samples / frame.sample_rate)
        self.offset = self._t0
        return self.offset

    def analyse(self, batch: AudioBatch) -> AnalysedAudio:
        """Denoise, VAD, pitch, prosody and voice prints of a batch. The heavy step: safe in a
        worker thread while video goes on (one batch at a time per track)."""
        update = self.analyzer.feed_many(batch.frames)
        d = self.diarizer
        if d is not None:
            d.add(update.audio16k, update.steps)
            if batch.frames and batch.frames[-1] is None:
                d.flush()
            if self.online and d.windows:
                self.current = d.current()
        return AnalysedAudio(update, batch.offset)

    def accept(self, analysed: AnalysedAudio, until: float = math.inf) -> list[SpeakerUpdate]:
        """Match an analysed batch to faces; returns the reports decided now (those up to
        `until` on the analysis clock)."""
        update, offset = analysed.update, analysed.offset
        self.offset = offset
        if update.hops:
            self.audio_end = update.hops[-1].t
        for h in update.hops:
            self.matcher.add_voice(h.t + offset, h.energy_dbfs)
        self._held.extend((r.t + offset, r) for r in update.reports)
        return self.decide(until)

    def push(
        self, frame: Any, received: float | None = None, until: float = math.inf
    ) -> list[SpeakerUpdate]:
        """All three steps for one frame (None: end of input)."""
        batch = self.collect(frame, received)
        return [] if batch is None else self.accept(self.analyse(batch), until)

    # -- matching --------------------------------------------------------------------------
    def add_mouth(self, t: float, face: int, sample: MouthSample) -> None:
        """A face's mouth at analysis-clock time `t` (for matching the voice to a face)."""
        self.matcher.add_mouth(t, face, sample)

    def gap(self) -> None:
        """Audio was skipped: estimate the receive clock afresh."""
        self._t0 = math.inf

    def decide(self, until: float) -> list[SpeakerUpdate]:
        """Decide the held reports up to `until`: the matched face and the diarized voice."""
        out = []
        while self._held and self._held[0][0] <= until:
            t, report = self._held.popleft()
            active = self.matcher.decide(t, report.speaking)
            voice = linked = name = None
            if report.speaking and self.current:
                voice = self.voices.number(self.name, self.current)
                linked = self.voices.heard(voice, active.face)
                name = self.voices.name(voice)
            state = (active.face, active.speaking, voice)
            out.append(
                SpeakerUpdate(self.name, report, active, state != self._last, voice, name, linked)
            )
            self._last = state
            if self.keep_timeline:
                self.timeline.append((dataclasses.replace(report, t=t), active))
        return out

    # -- results ---------------------------------------------------------------------------
    def turns(self) -> list[Turn]:
        """This track's diarized turns on the analysis clock (stream-wide numbers)."""
        if self.diarizer is None:
            return []
        return self.voices.turns(self.name, self.diarizer, self.offset, self.online)

    def reset(self) -> None:
        """Forget the decided reports and the speakers heard (the audio clock is kept)."""
        self.timeline.clear()
        self.diarizer = new_diarizer(self.config, self.embedder, self.online)
        self.current = 0
