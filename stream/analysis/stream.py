"""One per-stream analysis object for every source: files, live sessions, the Python API.

A source is a thin loop: it pushes decoded video frames (`push_video`) and drives one
`VoiceTrack` per audio track (`add_voice`, then collect -> analyse -> `accept`). What must
behave the same everywhere lives here or in the parts this facade holds: identities (one
numbering and exclusion set across the stream's video tracks; `VisionPipeline` per track),
the frame scheduler of each track (injected: a fixed media-time schedule for files, the frame
budget live), the aggregates, default names, thumbnails, and the stream's voices.

Clocks: video frames carry their track's media time; live, `received` puts each track on the
receive clock (media time plus the earliest receive-minus-media offset seen). Voice tracks keep
their own offset (stream/analysis/voice.py).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from stream.analysis.actions import FaceActionStats
from stream.analysis.aggregate import Aggregator
from stream.analysis.behaviour import BehaviourSummary
from stream.analysis.consolidate import (
    Consolidation,
    TrackletView,
    consolidate,
    renumber_aggregator,
)
from stream.analysis.ladder import DEFAULT_LADDER, FULL
from stream.analysis.naming import TrackNaming
from stream.analysis.schedule import FrameScheduler, SchedulerFactory, every_frame
from stream.analysis.stages import StageSource
from stream.analysis.summary import Analysis, faces_dict
from stream.analysis.thumbnails import Thumbnails
from stream.analysis.video import VideoTracks
from stream.analysis.voice import (
    AnalysedAudio,
    SpeakerUpdate,
    VoiceTrack,
    VoiceTracks,
)
from stream.analysis.voices import Turn
from stream.core.config import Config
from stream.core.types import MediaInfo, VideoFrame
from stream.vision.gaze import AttentionDrop
from stream.vision.gestures import HeadGesture
from stream.vision.pipeline import FrameResult
from stream.vision.signals import FrameSignals


class StreamAnalysis:
    """Analyses one stream's video tracks and audio tracks.

    Args:
        stages: the loaded models (`Stages`, shared by every stream of the process), or any
            `StageSource` (`FakeStages` in tests).
        fps: the nominal analysed frame rate (the last frame of a track stands for 1 / fps).
        keep_timeline: keep every sample (reports of files and saved sessions); off keeps
            memory flat in long live sessions.
        thumbnails: keep the sharpest crop of each face (for reports).
        hold_voice: decide a voice report only once video has reached its time (files, where
            audio is analysed ahead); live decides on arrival.
        config: overrides `stages.config` (e.g. tracker settings for a still image).
        online_speakers: give speaker IDs as audio arrives (default: when not `hold_voice`,
            i.e. live); files diarize the whole recording at the end.
        schedule: makes each video track's frame scheduler (used when `push_video` is not
            told what to run); default: everything on every frame.
        live: a live stream: behaviour posture follows `behaviour.posture_live` and per-frame
            behaviour rows are not kept (summaries only; default: not `hold_voice`).
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
        schedule: SchedulerFactory = every_frame,
        live: bool | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.stages = stages
        self.config = config or stages.config
        self.fps = fps
        self.keep_timeline = keep_timeline
        self.hold_voice = hold_voice
        self.online_speakers = not hold_voice if online_speakers is None else online_speakers
        self.live = not hold_voice if live is None else live
        self.video = VideoTracks(stages, self.config, schedule, self.live)
        self.audio = VoiceTracks(stages, self.config, self.online_speakers, keep_timeline)
        self.speakers = self.audio.tracks  # the audio tracks being analysed
        self.naming = TrackNaming()
        self.thumbs = Thumbnails() if thumbnails else None
        self.aggregator = self._new_aggregator()
        self.actions: dict[int, FaceActionStats] = {}
        self.behaviour = self._new_behaviour()
        self.frames = 0
        self.stage_sum: dict[str, float] = {}
        self.identity: Consolidation | None = None  # set by consolidate_identities()
        self._video_clock = -math.inf  # the latest video time on the analysis clock
        #: Guards the aggregates: frames are recorded in an inference thread while summaries
        #: and reports are read elsewhere (held only for bookkeeping, never during inference).
        self.lock = threading.RLock()

    def _new_aggregator(self) -> Aggregator:
        c = self.config.analyze
        # Live: timelines on the bounded ladder; files: every analysed frame (one CSV row each).
        ladder = None if self.live else FULL
        return Aggregator(
            1.0 / self.fps, c.max_gap_s, self.stages.supported, self.keep_timeline, ladder
        )

    def _new_behaviour(self) -> BehaviourSummary:
        keep = self.keep_timeline and not self.live
        return BehaviourSummary(self.config.analyze.max_gap_s, keep_rows=keep)

    # -- video -----------------------------------------------------------------------------
    def known_faces(self, track: str) -> list[int]:
        """Face numbers in the track's last analysed frame."""
        return self.video.known_faces(track)

    def scheduler(self, track: str) -> FrameScheduler:
        """The frame scheduler of a video track (made on first use)."""
        return self.video.scheduler(track)

    def push_video(
        self,
        frame: VideoFrame,
        track: str = "video",
        *,
        received: float | None = None,
        detect: bool | None = None,
        emotion_for: set[int] | None = None,
        record: bool = True,
    ) -> FrameResult:
        """Analyse one frame of a track.

        Args:
            frame: the frame at media time `frame.t` of its track.
            track: which video track (one pipeline and scheduler per track).
            received: when the frame arrived (live; puts the track on the receive clock).
            detect: run the detector (False: move faces along the optical flow); None: the
                track's scheduler plans the frame (and `emotion_for`).
            emotion_for: with `detect`: faces whose expression is computed now (None: all).
            record: count the frame in the aggregates and compute facial actions (False: only
                follow faces and sample mouths for voice matching, between analysed frames).
        """
        # Mouths are measured only while a voice may be matched to them.
        mouths = bool(self.audio.tracks)
        result, clock = self.video.process(
            frame, track, received, detect, emotion_for, record, mouths
        )
        self.audio.add_mouths(clock, [(f.number, f.mouth) for f in result.faces if f.mouth])
        self._video_clock = max(self._video_clock, clock)
        with self.lock:
            self.naming.name_new_faces(track, result, self.aggregator.names)
            if record:
                self._record(frame, result, track)
            elif result.behaviour_events:  # events end on follow-only frames too
                self.behaviour.add_events(self._signals(result))
        return result

    @staticmethod
    def _signals(result: FrameResult) -> FrameSignals:
        faces = {f.number: f.signals for f in result.faces if f.signals is not None}
        out = FrameSignals(faces)
        for e in result.behaviour_events:
            if isinstance(e, HeadGesture):
                out.gestures.append(e)
            else:
                out.drops.append(e)
        return out

    def _record(self, frame: VideoFrame, result: FrameResult, track: str) -> None:
        self.frames += 1
        for k, v in result.timings_ms.items():
            self.stage_sum[k] = self.stage_sum.get(k, 0.0) + v
        self.aggregator.add_frame(frame.t, [f.sample for f in result.faces], track)
        for f in result.faces:
            if f.actions_fresh and f.actions is not None:
                stats = self.actions.get(f.number)
                if stats is None:
                    ladder = DEFAULT_LADDER if self.live else FULL
                    stats = self.actions[f.number] = FaceActionStats(ladder=ladder)
                stats.add(frame.t, f.actions, self.keep_timeline)
        if result.behaviour_events or any(f.signals is not None for f in result.faces):
            self.behaviour.add(frame.t, self._signals(result))
        if self.thumbs is not None:
            self.thumbs.keep(frame, result)

    # -- voice -----------------------------------------------------------------------------
    def add_voice(self, track: str, offset: float = 0.0) -> VoiceTrack:
        """Start analysing an audio track (loads its voice chain; may take ~100 ms).

        Args:
            offset: the track's audio time 0 on the video clock (files); live tracks take
                theirs from receive times.
        """
        return self.audio.add(track, offset)

    def end_voice(self, track: str) -> None:
        """An audio track ended: stop matching it (its reports and turns stay in the results)."""
        self.audio.end(track)

    def drop_voice(self, track: str) -> None:
        """Forget an audio track (e.g. its analysis failed)."""
        self.audio.drop(track)

    @property
    def voice_until(self) -> float:
        """Up to where voice reports may be decided now (analysis clock)."""
        return self._video_clock if self.hold_voice else math.inf

    def accept(self, track: str, analysed: AnalysedAudio) -> list[SpeakerUpdate]:
        """Match an analysed batch of a track to faces; the reports decided now."""
        sp = self.speakers.get(track)
        return [] if sp is None else sp.accept(analysed, self.voice_until)

    def release_voice(self) -> list[SpeakerUpdate]:
        """Decide the held reports video has reached."""
        return self.audio.decide(self.voice_until)

    def rename_speaker(self, voice: int, name: str) -> None:
        """Name a diarized speaker (as `rename` names a face)."""
        self.audio.voices.rename(voice, name)

    # -- commands --------------------------------------------------------------------------
    def name_track(self, track: str, name: str) -> None:
        """Name the faces first seen on `track` after it from now on: the first one `name`,
        the next ones `name 2`, `name 3`, ... (a rename still replaces these names)."""
        self.naming.name_track(track, name)

    def rename(self, number: int, name: str) -> None:
        self.aggregator.names[number] = name

    def name_of(self, number: int) -> str:
        return self.aggregator.name_of(number)

    def set_excluded(self, number: int, excluded: bool) -> None:
        """Exclude a face: no expression is computed or recorded for it from the next frame."""
        self.video.exclude(number, excluded)

    def reset(self) -> None:
        """Forget identities, names, exclusions, aggregates and voices; numbering restarts."""
        with self.lock:
            self.video.reset()
            self.aggregator = self._new_aggregator()
            self.actions.clear()
            self.behaviour = self._new_behaviour()
            if self.thumbs is not None:
                self.thumbs.clear()
            self.identity = None
            self.frames = 0
            self.stage_sum.clear()
            self.naming.reset()
            self.audio.reset()

    # -- results ---------------------------------------------------------------------------
    def finish(self, end_t: float | None = None) -> list[SpeakerUpdate]:
        """Close the stream: the last frames' intervals, behaviour events still open, and
        every held voice report."""
        self.end_behaviour()
        with self.lock:
            self.aggregator.finish(end_t)
        return self.audio.decide(math.inf)

    def end_behaviour(self) -> list[HeadGesture | AttentionDrop]:
        """End the behaviour events still open on every track (recorded; returned for the
        event stream). A second call finds none."""
        events: list[HeadGesture | AttentionDrop] = []
        for p in self.video.pipelines.values():
            fs = p.flush_behaviour()
            with self.lock:
                self.behaviour.add_events(fs)
            events += [*fs.gestures, *fs.drops]
        return events

    def diarized_segments(self) -> list[Turn]:
        """Every audio track's diarized turns on the analysis clock, stream-wide numbers."""
        return self.audio.turns()

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
            if self.thumbs is not None:
                self.thumbs.renumber(result)
            self.audio.renumber(result)
            renumbered = result.renumbered()
            self.behaviour.join(
                {n: renumbered.get(n, result.number_at(n, -math.inf)) for n in self.behaviour.faces}
            )
            self.identity = result
        return result

    def tracklet_views(self) -> list[TrackletView]:
        """Every confirmed tracklet of the stream's video tracks (keys unique across tracks)."""
        return self.video.tracklet_views()

    def summary(self) -> dict[str, Any]:
        """Per-face and overall summaries so far (the live summary events' payload)."""
        with self.lock:
            faces, overall = self.aggregator.faces(), self.aggregator.overall()
            return faces_dict(faces, overall, self.stages.va_estimated, self.behaviour)

    def result(
        self, info: MediaInfo, wall_s: float, error: str = "", warnings: list[str] | None = None
    ) -> Analysis:
        """The whole analysis (after `finish`; before it, the analysis so far), for reports."""
        with self.lock:
            faces = self.aggregator.faces()
            voice, speakers = self.audio.results()
            shown = {f.number for f in faces}
            return Analysis(
                info=info,
                fps=self.fps,
                frames=self.frames,
                faces=faces,
                overall=self.aggregator.overall(),
                timelines={f.number: self.aggregator.timeline(f.number) for f in faces},
                thumbnails=self.thumbs.jpegs() if self.thumbs is not None else {},
                va_estimated=self.stages.va_estimated,
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
                behaviour=self.behaviour if self.behaviour.faces else None,
            )
