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
import queue
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stream.analysis.consolidate import Consolidation
from stream.analysis.speaker import ActiveSpeaker, SpeakerMatcher
from stream.analysis.speakers import SpeakersAnalysis, summarise_speakers
from stream.analysis.stages import VoiceStage
from stream.analysis.voice_summary import VoiceAnalysis, summarise_voice
from stream.analysis.voice_timeline import VoiceTimeline
from stream.analysis.voices import Turn, Voices
from stream.core.config import Config
from stream.vision.mouth import MouthSample
from stream.voice.analyzer import Prepared, VoiceAnalyzer, VoiceUpdate
from stream.voice.diarize import DiarizationParams, Diarizer
from stream.voice.prosody import ProsodyReport

#: Audio fed to the voice models per call: batches are cheaper per second than single frames,
#: and 0.1 s keeps live prosody responsive.
AUDIO_BATCH_S = 0.1
#: Batches a file's first half of the voice chain may run ahead of the rest (`push_all`).
PREPARED_AHEAD = 8


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
        threshold=d.threshold,
        min_speaker_s=d.min_speaker_s,
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
        #: Compact (report, match) pairs: ~230 B a report instead of ~770 (4 a second a track).
        self.timeline = VoiceTimeline()
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
        return self._analysed(batch, self.analyzer.feed_many(batch.frames))

    def _analysed(self, batch: AudioBatch, update: VoiceUpdate) -> AnalysedAudio:
        """The diarizer's part of `analyse`, on the voice chain's update of a batch."""
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

    def push_all(self, frames: Iterable[Any], until: float = math.inf) -> None:
        """`push` every frame of a file's audio (end it with None; the decided reports go to
        the timeline): the same results, but the voice chain's first half (resampling, gain,
        denoiser: about half its cost) runs in a thread ahead of the rest, so two cores share
        the work. An error raised by `frames` is raised here once the audio before it has been
        analysed."""
        if not isinstance(self.analyzer, VoiceAnalyzer):
            for frame in frames:
                self.push(frame, until=until)
            return
        chain = self.analyzer
        ready: queue.Queue[tuple[AudioBatch, Prepared | None] | Exception | None]
        ready = queue.Queue(maxsize=PREPARED_AHEAD)
        stop = threading.Event()

        def first_half() -> None:
            try:
                for frame in frames:
                    batch = self.collect(frame)
                    if batch is not None:
                        ready.put((batch, chain.prepare(batch.frames)))
                    if stop.is_set():
                        break
            except Exception as exc:  # handed to the caller's thread
                ready.put(exc)
            finally:
                ready.put(None)

        thread = threading.Thread(target=first_half, name=f"voice-{self.name}", daemon=True)
        thread.start()
        item = ready.get()
        try:
            while item is not None:
                if isinstance(item, Exception):
                    raise item
                batch, prepared = item
                self.accept(self._analysed(batch, chain.finish(prepared)), until)
                item = ready.get()
        finally:
            stop.set()
            while item is not None:  # let the thread end
                item = ready.get()
            thread.join()

    # -- matching --------------------------------------------------------------------------
    def add_mouth(self, t: float, face: int, sample: MouthSample) -> None:
        """A face's mouth at analysis-clock time `t` (for matching the voice to a face)."""
        self.matcher.add_mouth(t, face, sample)

    def gap(self) -> None:
        """Audio was skipped: estimate the receive clock afresh."""
        self._t0 = math.inf

    def decide(self, until: float) -> list[SpeakerUpdate]:
        """Decide the held reports up to `until`: the matched face and the diarized voice.

        A finite `until` (files: how far video has reached) also waits for the voice the
        match reads after a report's time (up to the matcher's largest audio-video lag): the
        file's audio is analysed in a thread, so how much of it had arrived would otherwise
        change the result from run to run. `math.inf` (live, the end) decides them all."""
        if math.isfinite(until):
            until = min(until, self.audio_end + self.offset - float(self.matcher.lags[-1]))
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


class VoiceTracks:
    """A stream's audio tracks: their `VoiceTrack`s over one set of stream-wide `Voices`.

    Args:
        stages: gives each track its voice chain (`voice()`) and the voice-print model
            (`speaker_embedder`, optional).
        config: audio and diarization settings.
        online: give speaker IDs as audio arrives (live).
        keep_timeline: keep every decided report.
    """

    def __init__(self, stages: Any, config: Config, online: bool, keep_timeline: bool) -> None:
        self.stages = stages
        self.config = config
        self.online = online
        self.keep_timeline = keep_timeline
        self.voices = Voices(config.diarization.link_min_share)
        self.tracks: dict[str, VoiceTrack] = {}  # being analysed
        self.ended: list[VoiceTrack] = []  # ended; their reports stay in the results

    def add(self, track: str, offset: float = 0.0) -> VoiceTrack:
        """The track's voice analysis (made on first use: loads its voice chain)."""
        sp = self.tracks.get(track)
        if sp is None:
            embedder = getattr(self.stages, "speaker_embedder", None)
            sp = VoiceTrack(
                track,
                self.stages.voice(),
                self.config,
                embedder,
                self.voices,
                self.online,
                self.keep_timeline,
                offset,
            )
            self.tracks[track] = sp
        return sp

    def end(self, track: str) -> None:
        """Stop matching a track (its reports and turns stay in the results)."""
        sp = self.tracks.pop(track, None)
        if sp is not None:
            self.ended.append(sp)

    def drop(self, track: str) -> None:
        """Forget a track (e.g. its analysis failed)."""
        self.tracks.pop(track, None)

    def add_mouths(self, t: float, faces: list[tuple[int, MouthSample]]) -> None:
        """A video frame's mouths at analysis-clock time `t`, for every live track."""
        for sp in list(self.tracks.values()):
            for number, mouth in faces:
                sp.add_mouth(t, number, mouth)

    def decide(self, until: float) -> list[SpeakerUpdate]:
        """Every live track's held reports up to `until`."""
        return [u for sp in list(self.tracks.values()) for u in sp.decide(until)]

    def all(self) -> list[VoiceTrack]:
        return [*self.ended, *self.tracks.values()]

    def turns(self) -> list[Turn]:
        """Every track's diarized turns on the analysis clock, stream-wide numbers."""
        return sorted(t for sp in self.all() for t in sp.turns())

    def timeline(self) -> list[tuple[ProsodyReport, ActiveSpeaker]]:
        """Every track's decided reports, in time order."""
        return sorted((x for sp in self.all() for x in sp.timeline), key=lambda x: x[0].t)

    def results(self) -> tuple[VoiceAnalysis | None, SpeakersAnalysis | None]:
        """The voice summary and the diarized speakers of all tracks (None: no audio track,
        not diarized)."""
        tracks = self.all()
        if not tracks:
            return None, None
        timeline = self.timeline()
        a, d = self.config.audio, self.config.diarization
        voice = summarise_voice(timeline, a.hop_s, a.denoise)
        if not any(sp.diarizer is not None for sp in tracks):
            return voice, None
        turns = self.turns()
        return voice, summarise_speakers(
            timeline, turns, a.hop_s, self.voices.names, d.link_min_share
        )

    def renumber(self, c: Consolidation) -> None:
        """Carry consolidated face numbers into the decided reports' matches."""
        for sp in self.all():
            sp.timeline = VoiceTimeline((r, _renumber_active(a, c)) for r, a in sp.timeline)

    def reset(self) -> None:
        """Forget the reports, speakers and names (live tracks go on)."""
        self.voices.reset()
        self.ended.clear()
        for sp in self.tracks.values():
            sp.reset()


def _renumber_active(a: ActiveSpeaker, c: Consolidation) -> ActiveSpeaker:
    """A voice-to-face match with consolidated face numbers."""
    face = None if a.face is None else c.number_at(a.face, a.t)
    scores = {c.number_at(k, a.t): v for k, v in a.scores.items()}
    return dataclasses.replace(a, face=face, scores=scores)
