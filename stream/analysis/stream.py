"""One per-stream analysis object for every source: files, WebRTC peers and any later ingest.

A source is a thin loop that pushes decoded video frames and audio into a `StreamAnalysis`:
`analyze` loops over a file, a live session loops over its tracks and publishes what comes
back. Everything that must behave the same on both paths lives here: identities (one numbering
and one exclusion set across the stream's video tracks), the aggregator, per-speaker voice
analysis, matching voices to faces, and the clocks that line audio up with video.

Clocks: offline, audio and video share the file's media time. Live, each track has its own
media time, so both are put on the receive clock: media time plus the earliest receive-minus-
media offset seen (frames arrive late with jitter, never early).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2

from stream.analysis.actions import FaceActionStats
from stream.analysis.aggregate import Aggregator
from stream.analysis.consolidate import (
    Consolidation,
    TrackletView,
    consolidate,
    renumber_aggregator,
)
from stream.analysis.speaker import ActiveSpeaker, SpeakerMatcher
from stream.analysis.speakers import SpeakersAnalysis, speaker_label, summarise_speakers
from stream.analysis.stages import StageSource, VisionStage, VoiceStage
from stream.analysis.summary import Analysis, faces_dict
from stream.analysis.voice_summary import summarise_voice
from stream.core.config import Config
from stream.core.types import MediaInfo, VideoFrame
from stream.vision.align import crop_squares
from stream.vision.pipeline import FrameResult
from stream.vision.tracker import IdentityTracker, Numbering
from stream.voice.analyzer import VoiceUpdate
from stream.voice.diarize import DiarizationParams, Diarizer
from stream.voice.prosody import ProsodyReport

THUMB_PX = 96
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


@dataclass
class _Speaker:
    analyzer: VoiceStage
    matcher: SpeakerMatcher
    t0: float = math.inf  # receive-clock time of the speaker's audio time 0 (live)
    samples: int = 0
    held: deque[tuple[float, ProsodyReport]] = field(default_factory=deque)
    last: tuple[int | None, bool, int | None] | None = None
    timeline: list[tuple[ProsodyReport, ActiveSpeaker]] = field(default_factory=list)
    diarizer: Diarizer | None = None
    current: int = 0  # the diarizer's online speaker ID of the latest audio (0: none yet)
    offset: float = 0.0  # the speaker's audio time 0 on the analysis clock


class StreamAnalysis:
    """Analyses one stream's video tracks and speakers.

    Args:
        stages: the loaded models (`Stages`, shared by every stream of the process), or any
            `StageSource` (tests inject their own).
        fps: the nominal analysed frame rate (the last frame of a track stands for 1 / fps).
        keep_timeline: keep every sample (reports of files and saved sessions); off keeps
            memory flat in long live sessions.
        thumbnails: keep the sharpest crop of each face (for reports).
        hold_voice: decide a speech report's speaker only once video has reached its time (files,
            where audio is analysed ahead in a thread); live decides on arrival.
        config: overrides `stages.config` (e.g. tracker settings for a still image).
        online_speakers: give speaker IDs as audio arrives (default: when not `hold_voice`,
            i.e. live); files diarize the whole recording at the end.
    """

    def __init__(
        self,
        stages: StageSource,
        fps: float,
        keep_timeline: bool = True,
        thumbnails: bool = False,
        hold_voice: bool = False,
        config: Config | None = None,
        online_speakers: bool | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.stages = stages
        self.config = config or stages.config
        self.fps = fps
        self.keep_timeline = keep_timeline
        self.thumbnails = thumbnails
        self.hold_voice = hold_voice
        self.numbering = Numbering()
        self.excluded: set[int] = set()
        self.pipelines: dict[str, VisionStage] = {}
        self.speakers: dict[str, _Speaker] = {}
        self.aggregator = self._new_aggregator()
        self.frames = 0
        self.stage_sum: dict[str, float] = {}
        self._best: dict[int, tuple[float, bytes]] = {}
        self._v0: dict[str, float] = {}
        self._video_clock = -math.inf  # the latest video time on the analysis clock
        #: Guards the aggregates: frames are recorded in an inference thread while summaries
        #: and reports are read elsewhere (held only for bookkeeping, never during inference).
        self.lock = threading.RLock()
        self.identity: Consolidation | None = None  # set by consolidate_identities()
        self.online_speakers = not hold_voice if online_speakers is None else online_speakers
        self.actions: dict[int, FaceActionStats] = {}
        self.speaker_names: dict[int, str] = {}
        self._voice_ids: dict[tuple[str, int], int] = {}  # (track, diarizer ID) -> stream number
        self._voice_links: dict[int, dict[int | None, int]] = {}  # live face-link counts
        self._segments: list[tuple[float, float, int]] | None = None
        #: Default names for the faces first seen on a track (e.g. a participant's display name).
        self.track_names: dict[str, str] = {}
        self._track_faces: dict[str, int] = {}  # faces named after their track so far
        self._seen: set[int] = set()  # face numbers that have appeared (default naming)

    def _new_aggregator(self) -> Aggregator:
        return Aggregator(
            1.0 / self.fps, self.config.analyze.max_gap_s, self.stages.supported, self.keep_timeline
        )

    # -- video -----------------------------------------------------------------------------
    def pipeline(self, track: str) -> VisionStage:
        """The vision pipeline of a video track (made on first use; IDs unique in the stream)."""
        p = self.pipelines.get(track)
        if p is None:
            p = self.stages.vision(self.config, self.numbering)
            p.excluded = self.excluded
            self.pipelines[track] = p
        return p

    def known_faces(self, track: str) -> list[int]:
        """Face numbers in the track's last analysed frame (for frame budgets)."""
        return self.pipeline(track).tracker_numbers()

    def push_video(
        self,
        frame: VideoFrame,
        track: str = "video",
        *,
        received: float | None = None,
        detect: bool = True,
        emotion_for: set[int] | None = None,
        record: bool = True,
    ) -> FrameResult:
        """Analyse one frame of a track.

        Args:
            frame: the frame at media time `frame.t` of its track.
            track: which video track (one pipeline per track).
            received: when the frame arrived (live; puts the track on the receive clock).
            detect: run the detector (False: move faces along the optical flow).
            emotion_for: faces whose expression is computed now (None: all).
            record: count the frame in the aggregates (False: only track faces and sample
                mouths for speaker matching, between analysed frames).
        """
        result = self.pipeline(track).process(frame, detect, emotion_for, actions=record)
        if track in self.track_names:
            self._name_new_faces(track, result)
        if received is not None:
            self._v0[track] = min(self._v0.get(track, math.inf), received - frame.t)
        clock = frame.t + self._v0.get(track, 0.0)
        for f in result.faces:
            if f.mouth is not None:
                for sp in self.speakers.values():
                    sp.matcher.add_mouth(clock, f.number, f.mouth)
        self._video_clock = max(self._video_clock, clock)
        if record:
            with self.lock:
                self.frames += 1
                for k, v in result.timings_ms.items():
                    self.stage_sum[k] = self.stage_sum.get(k, 0.0) + v
                self.aggregator.add_frame(frame.t, [f.sample for f in result.faces], track)
                for f in result.faces:
                    if f.actions_fresh and f.actions is not None:
                        stats = self.actions.setdefault(f.number, FaceActionStats())
                        stats.add(frame.t, f.actions, self.keep_timeline)
                if self.thumbnails:
                    self._keep_thumbnails(frame, result)
        return result

    def _keep_thumbnails(self, frame: VideoFrame, result: FrameResult) -> None:
        for f in result.faces:
            x1, y1, x2, y2 = f.box
            q = float(f.score) * float(min(x2 - x1, y2 - y1))
            if q > self._best.get(f.number, (-1.0, b""))[0]:
                crop = crop_squares(frame.image, f.box[None], THUMB_PX, 1.3)[0]
                ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
                self._best[f.number] = (q, bytes(buf) if ok else b"")

    # -- voice -----------------------------------------------------------------------------
    def add_speaker(self, speaker: str) -> None:
        """Start analysing a speaker's audio (loads per-speaker state; may take ~100 ms)."""
        if speaker not in self.speakers:
            a = self.config.audio
            self.speakers[speaker] = _Speaker(
                self.stages.voice(),
                SpeakerMatcher(a.match_window_s, a.match_threshold),
                diarizer=self._new_diarizer(),
            )

    def _new_diarizer(self) -> Diarizer | None:
        d = self.config.diarization
        embedder = getattr(self.stages, "speaker_embedder", None)
        if embedder is None or not d.enabled or (self.online_speakers and not d.live):
            return None
        params = DiarizationParams(
            window_s=d.window_s,
            hop_s=d.hop_s,
            max_speakers=d.max_speakers,
            neighbours=d.neighbours,
            min_turn_s=d.min_turn_s,
        )
        return Diarizer(embedder, params, online=self.online_speakers)

    def remove_speaker(self, speaker: str) -> None:
        """Stop matching a speaker (its track ended)."""
        self.speakers.pop(speaker, None)

    def audio_clock(self, speaker: str, frames: Iterable[tuple[Any, float]]) -> float:
        """Put a speaker's audio on the receive clock: feed (frame, received time) pairs as they
        arrive; returns the receive-clock time of the speaker's audio time 0."""
        sp = self.speakers[speaker]
        for frame, received in frames:
            sp.samples += frame.samples
            sp.t0 = min(sp.t0, received - sp.samples / frame.sample_rate)
        return sp.t0

    def audio_gap(self, speaker: str) -> None:
        """Audio of the speaker was skipped: estimate its receive clock afresh."""
        sp = self.speakers.get(speaker)
        if sp is not None:
            sp.t0 = math.inf

    def analyse_audio(self, speaker: str, frames: list[Any]) -> VoiceUpdate:
        """Denoise, VAD, pitch and prosody of a batch of audio frames (None flushes at the end).

        The heavy part, safe to run in a worker thread while the caller keeps pushing video
        (one batch at a time per speaker). Pass the result to `accept_voice`.
        """
        sp = self.speakers[speaker]
        update = sp.analyzer.feed_many(frames)
        if sp.diarizer is not None:
            sp.diarizer.add(update.audio16k, update.steps)
            if frames and frames[-1] is None:
                sp.diarizer.flush()
            if self.online_speakers and sp.diarizer.windows:
                sp.current = sp.diarizer.current()
        return update

    def accept_voice(
        self, speaker: str, update: VoiceUpdate, offset: float = 0.0
    ) -> list[SpeakerUpdate]:
        """Match an analysed batch to faces.

        Args:
            speaker: the speaker.
            update: from `analyse_audio`.
            offset: the speaker's audio time 0 on the analysis clock (`audio_clock` live; the
                audio stream's start relative to video in a file).

        Returns:
            The reports decided now (with `hold_voice`, those video has caught up with).
        """
        sp = self.speakers.get(speaker)
        if sp is None:
            return []
        sp.offset = offset
        for h in update.hops:
            sp.matcher.add_voice(h.t + offset, h.energy_dbfs)
        sp.held.extend((r.t + offset, r) for r in update.reports)
        return self._decide(speaker, sp, self._video_clock if self.hold_voice else math.inf)

    def _decide(self, speaker: str, sp: _Speaker, until: float) -> list[SpeakerUpdate]:
        out = []
        while sp.held and sp.held[0][0] <= until:
            t, report = sp.held.popleft()
            active = sp.matcher.decide(t, report.speaking)
            voice = self._voice_id(speaker, sp.current) if report.speaking and sp.current else None
            linked = None
            if voice is not None:
                counts = self._voice_links.setdefault(voice, {})
                counts[active.face] = counts.get(active.face, 0) + 1
                linked = self.voice_face(voice)
            state = (active.face, active.speaking, voice)
            name = self.speaker_name(voice) if voice is not None else None
            out.append(
                SpeakerUpdate(speaker, report, active, state != sp.last, voice, name, linked)
            )
            sp.last = state
            if self.keep_timeline:
                sp.timeline.append((dataclasses.replace(report, t=t), active))
        return out

    def release_voice(self) -> list[SpeakerUpdate]:
        """Decide every held report (video has reached them)."""
        out = []
        for name, sp in self.speakers.items():
            out += self._decide(name, sp, self._video_clock if self.hold_voice else math.inf)
        return out

    def _voice_id(self, track: str, local: int) -> int:
        """The stream-wide number of a track's diarized speaker (numbered as they appear)."""
        key = (track, local)
        if key not in self._voice_ids:
            self._voice_ids[key] = len(self._voice_ids) + 1
        return self._voice_ids[key]

    def voice_face(self, voice: int) -> int | None:
        """The face a diarized speaker is linked to so far (live), None: not (yet) seen."""
        counts = self._voice_links.get(voice, {})
        total = sum(counts.values())
        faces = [(f, n) for f, n in counts.items() if f is not None]
        if not faces or total < 4:
            return None
        face, n = max(faces, key=lambda x: x[1])
        return face if n / total >= self.config.diarization.link_min_share else None

    def speaker_name(self, voice: int) -> str:
        return self.speaker_names.get(voice) or speaker_label(voice)

    def rename_speaker(self, voice: int, name: str) -> None:
        """Name a diarized speaker (as `rename` names a face)."""
        self.speaker_names[voice] = name

    def name_track(self, track: str, name: str) -> None:
        """Name the faces first seen on `track` after it from now on: the first one `name`,
        the next ones `name 2`, `name 3`, ... (a rename still replaces these names)."""
        self.track_names[track] = name

    def _name_new_faces(self, track: str, result: FrameResult) -> None:
        base = self.track_names[track]
        with self.lock:
            for f in sorted(result.faces, key=lambda f: f.number):
                if f.number in self._seen:
                    continue
                self._seen.add(f.number)
                if f.number in self.aggregator.names:
                    continue
                k = self._track_faces.get(track, 0) + 1
                self._track_faces[track] = k
                self.aggregator.names[f.number] = base if k == 1 else f"{base} {k}"

    # -- commands --------------------------------------------------------------------------
    def rename(self, number: int, name: str) -> None:
        self.aggregator.names[number] = name

    def name_of(self, number: int) -> str:
        return self.aggregator.name_of(number)

    def set_excluded(self, number: int, excluded: bool) -> None:
        """Exclude a face: no expression is computed or recorded for it from the next frame."""
        if excluded:
            self.excluded.add(number)
        else:
            self.excluded.discard(number)

    def reset(self) -> None:
        """Forget identities, names, exclusions and aggregates; numbering restarts at 1."""
        with self.lock:
            self._reset()

    def _reset(self) -> None:
        for p in self.pipelines.values():
            p.reset()
        self.excluded.clear()
        self.numbering.reset()
        self.aggregator = self._new_aggregator()
        self._best.clear()
        self.identity = None
        self.frames = 0
        self.stage_sum.clear()
        for sp in self.speakers.values():
            sp.timeline.clear()
            sp.diarizer = self._new_diarizer()
            sp.current = 0
        self.actions.clear()
        self.speaker_names.clear()
        self._track_faces.clear()
        self._seen.clear()
        self._voice_ids.clear()
        self._voice_links.clear()
        self._segments = None

    # -- results ---------------------------------------------------------------------------
    def finish(self, end_t: float | None = None) -> list[SpeakerUpdate]:
        """Close the stream: the last frames' intervals, and every held voice report."""
        with self.lock:
            self.aggregator.finish(end_t)
        out = []
        for name, sp in self.speakers.items():
            out += self._decide(name, sp, math.inf)
        self._segments = self.diarized_segments()
        return out

    def diarized_segments(self) -> list[tuple[float, float, int]]:
        """Every track's diarized turns on the analysis clock, stream-wide speaker numbers.

        Files: clustered over the whole recording (IDs numbered by first appearance). Live:
        the online IDs' clusters (recent windows), so numbers match the events sent.
        """
        out: list[tuple[float, float, int]] = []
        for name, sp in self.speakers.items():
            if sp.diarizer is None:
                continue
            if self.online_speakers:
                for w in sp.diarizer.windows:
                    if w.stable:
                        out.append((w.start + sp.offset, w.end + sp.offset, w.stable))
                out = _merge_windows(out, name, self._voice_id)
            else:
                for s in sp.diarizer.segments():
                    out.append(
                        (s.start + sp.offset, s.end + sp.offset, self._voice_id(name, s.speaker))
                    )
        return sorted(out)

    def speakers_result(
        self, timeline: list[tuple[ProsodyReport, ActiveSpeaker]]
    ) -> SpeakersAnalysis | None:
        if not any(sp.diarizer is not None for sp in self.speakers.values()):
            return None
        segs = self._segments if self._segments is not None else self.diarized_segments()
        d = self.config.diarization
        return summarise_speakers(
            timeline, segs, self.config.audio.hop_s, self.speaker_names, d.link_min_share
        )

    def consolidate_identities(self) -> Consolidation | None:
        """Whole-stream identity consolidation (files, after `finish`): join tracklets into
        people (`stream.analysis.consolidate`), number them by first appearance and carry the
        new numbers into the aggregates, thumbnails and voice timelines. Needs timelines."""
        if not self.keep_timeline:
            return None
        t = self.config.tracking
        with self.lock:
            result = consolidate(self.tracklet_views(), t.join_threshold, t.join_margin)
            self.aggregator = renumber_aggregator(self.aggregator, result)
            moved = result.renumbered()
            best: dict[int, tuple[float, bytes]] = {}
            for old, item in sorted(self._best.items(), key=lambda kv: kv[0] not in moved):
                new = moved.get(old, result.number_at(old, -1.0))
                if new not in best or (old in moved and item[0] > best[new][0]):
                    best[new] = item
            self._best = best
            for sp in self.speakers.values():
                sp.timeline = [(r, _renumber_active(a, result)) for r, a in sp.timeline]
            self.identity = result
        return result

    def tracklet_views(self) -> list[TrackletView]:
        """Every confirmed tracklet of the stream's video tracks (keys unique across tracks)."""
        out: list[TrackletView] = []
        for track, p in self.pipelines.items():
            tracker = getattr(p, "tracker", None)
            if not isinstance(tracker, IdentityTracker):
                continue
            for tr in tracker.tracklets:
                if tr.number > 0:
                    key = len(out) + 1
                    emb = tr.embeddings()
                    out.append(TrackletView(key, tr.number, tr.first_t, tr.last_t, emb, track))
        return out

    def summary(self) -> dict[str, Any]:
        """Per-face and overall summaries so far (the live summary events' payload)."""
        with self.lock:
            faces, overall = self.aggregator.faces(), self.aggregator.overall()
        return faces_dict(faces, overall, self.va_estimated)

    @property
    def va_estimated(self) -> bool:
        return self.stages.va_estimated

    def result(
        self,
        info: MediaInfo,
        wall_s: float,
        error: str = "",
        warnings: list[str] | None = None,
    ) -> Analysis:
        """The whole analysis (after `finish`; before it, the analysis so far), for reports."""
        with self.lock:
            return self._result(info, wall_s, error, warnings)

    def _result(
        self, info: MediaInfo, wall_s: float, error: str, warnings: list[str] | None
    ) -> Analysis:
        faces = self.aggregator.faces()
        voice = None
        timeline = [x for sp in list(self.speakers.values()) for x in sp.timeline]
        if self.speakers:
            timeline.sort(key=lambda x: x[0].t)
            a = self.config.audio
            voice = summarise_voice(timeline, a.hop_s, a.denoise)
        speakers = self.speakers_result(timeline)
        shown = {f.number for f in faces}
        return Analysis(
            info=info,
            fps=self.fps,
            frames=self.frames,
            faces=faces,
            overall=self.aggregator.overall(),
            timelines={f.number: self.aggregator.timeline(f.number) for f in faces},
            thumbnails={k: v[1] for k, v in self._best.items()},
            va_estimated=self.va_estimated,
            supported=self.stages.supported_labels,
            models=self.stages.model_names,
            wall_s=wall_s,
            stage_ms={k: v / max(self.frames, 1) for k, v in self.stage_sum.items()},
            error=error,
            warnings=list(warnings or []),
            voice=voice,
            identity=self.identity.to_dict() if self.identity else None,
            speakers=speakers,
            actions={n: s for n, s in self.actions.items() if s.count and n in shown},
            actions_raw=self.config.actions.raw,
        )


def _merge_windows(
    spans: list[tuple[float, float, int]], track: str, number: Callable[[str, int], int]
) -> list[tuple[float, float, int]]:
    """Overlapping online windows -> turns: each window's second half goes to the next one."""
    spans = sorted(spans)
    out: list[tuple[float, float, int]] = []
    for i, (s, e, local) in enumerate(spans):
        end = min(e, spans[i + 1][0] + (e - spans[i + 1][0]) / 2) if i + 1 < len(spans) else e
        start = out[-1][1] if out and out[-1][1] > s else s
        sid = number(track, local)
        if out and out[-1][2] == sid and start - out[-1][1] < 0.3:
            out[-1] = (out[-1][0], max(end, out[-1][1]), sid)
        elif end > start:
            out.append((start, end, sid))
    return out


def _renumber_active(a: ActiveSpeaker, c: Consolidation) -> ActiveSpeaker:
    """A voice-to-face match with consolidated face numbers."""
    face = None if a.face is None else c.number_at(a.face, a.t)
    scores = {c.number_at(k, a.t): v for k, v in a.scores.items()}
    return dataclasses.replace(a, face=face, scores=scores)


def now() -> float:
    """The receive clock (monotonic seconds)."""
    return time.perf_counter()
