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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2

from stream.analysis.aggregate import Aggregator
from stream.analysis.speaker import ActiveSpeaker, SpeakerMatcher
from stream.analysis.stages import StageSource, VisionStage, VoiceStage
from stream.analysis.summary import Analysis, faces_dict
from stream.analysis.voice_summary import summarise_voice
from stream.core.config import Config
from stream.core.types import MediaInfo, VideoFrame
from stream.vision.align import crop_squares
from stream.vision.pipeline import FrameResult
from stream.vision.tracker import Numbering
from stream.voice.analyzer import VoiceUpdate
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
    changed: bool  # the matched face or speaking state differs from the previous update


@dataclass
class _Speaker:
    analyzer: VoiceStage
    matcher: SpeakerMatcher
    t0: float = math.inf  # receive-clock time of the speaker's audio time 0 (live)
    samples: int = 0
    held: deque[tuple[float, ProsodyReport]] = field(default_factory=deque)
    last: tuple[int | None, bool] | None = None
    timeline: list[tuple[ProsodyReport, ActiveSpeaker]] = field(default_factory=list)


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
    """

    def __init__(
        self,
        stages: StageSource,
        fps: float,
        keep_timeline: bool = True,
        thumbnails: bool = False,
        hold_voice: bool = False,
        config: Config | None = None,
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
        result = self.pipeline(track).process(frame, detect, emotion_for)
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
                self.stages.voice(), SpeakerMatcher(a.match_window_s, a.match_threshold)
            )

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
        return self.speakers[speaker].analyzer.feed_many(frames)

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
        for h in update.hops:
            sp.matcher.add_voice(h.t + offset, h.energy_dbfs)
        sp.held.extend((r.t + offset, r) for r in update.reports)
        return self._decide(speaker, sp, self._video_clock if self.hold_voice else math.inf)

    def _decide(self, speaker: str, sp: _Speaker, until: float) -> list[SpeakerUpdate]:
        out = []
        while sp.held and sp.held[0][0] <= until:
            t, report = sp.held.popleft()
            active = sp.matcher.decide(t, report.speaking)
            state = (active.face, active.speaking)
            out.append(SpeakerUpdate(speaker, report, active, state != sp.last))
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
        self.frames = 0
        self.stage_sum.clear()
        for sp in self.speakers.values():
            sp.timeline.clear()

    # -- results ---------------------------------------------------------------------------
    def finish(self, end_t: float | None = None) -> list[SpeakerUpdate]:
        """Close the stream: the last frames' intervals, and every held voice report."""
        with self.lock:
            self.aggregator.finish(end_t)
        out = []
        for name, sp in self.speakers.items():
            out += self._decide(name, sp, math.inf)
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
        )


def now() -> float:
    """The receive clock (monotonic seconds)."""
    return time.perf_counter()
