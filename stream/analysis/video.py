"""A stream's video tracks: a vision pipeline and a frame scheduler per track, one numbering.

Face numbers and exclusions are shared by the stream's tracks (a call's cameras never show the
same number for two faces). Live, each track has its own media time; `received` puts it on
the receive clock (media time plus the earliest receive-minus-media offset seen).
"""

from __future__ import annotations

import math

from stream.analysis.consolidate import TrackletView
from stream.analysis.schedule import FrameScheduler, SchedulerFactory
from stream.analysis.stages import StageSource, VisionStage
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.vision.pipeline import FrameResult
from stream.vision.tracker import IdentityTracker, Numbering


class VideoTracks:
    """The video tracks of one stream.

    Args:
        stages: builds each track's pipeline over the shared models.
        config: tracking, smoothing and facial-action settings of the pipelines.
        schedule: makes each track's frame scheduler.
        live: live tracks (behaviour posture follows `behaviour.posture_live`).
    """

    def __init__(
        self, stages: StageSource, config: Config, schedule: SchedulerFactory, live: bool = False
    ) -> None:
        self.stages = stages
        self.live = live
        self.config = config
        self.schedule = schedule
        self.numbering = Numbering()
        self.excluded: set[int] = set()
        self.pipelines: dict[str, VisionStage] = {}
        self.schedulers: dict[str, FrameScheduler] = {}
        self._v0: dict[str, float] = {}  # receive-clock time of each track's media time 0
        # The frame that comes after the next one processed, per track (`ahead`).
        self._upcoming: dict[str, tuple[VideoFrame, bool]] = {}

    def pipeline(self, track: str) -> VisionStage:
        """The vision pipeline of a track (made on first use)."""
        p = self.pipelines.get(track)
        if p is None:
            p = self.stages.vision(self.config, self.numbering, self.live)
            p.excluded = self.excluded
            self.pipelines[track] = p
        return p

    def scheduler(self, track: str) -> FrameScheduler:
        """The frame scheduler of a track (made on first use)."""
        s = self.schedulers.get(track)
        if s is None:
            s = self.schedulers[track] = self.schedule()
        return s

    def ahead(self, track: str, frame: VideoFrame, planned: bool = True) -> None:
        """Say which frame of the track follows the next one processed (files, whose frames
        are decoded ahead): when it will need the detector (`planned`: as its scheduler's
        `detect_due` expects; else it will be processed with detection), the detector starts
        on it while the next frame is analysed. Results are the same as without."""
        self._upcoming[track] = (frame, planned)

    def known_faces(self, track: str) -> list[int]:
        """Face numbers in the track's last analysed frame."""
        return self.pipeline(track).tracker_numbers()

    def process(
        self,
        frame: VideoFrame,
        track: str,
        received: float | None,
        detect: bool | None,
        emotion_for: set[int] | None,
        actions: bool,
        mouths: bool = True,
    ) -> tuple[FrameResult, float]:
        """Analyse a frame (planned by the track's scheduler when `detect` is None); returns
        the result and the frame's time on the analysis clock (`mouths`: measure mouths)."""
        planned = detect is None
        coarse = False
        if planned:
            if emotion_for is not None:
                raise ValueError("emotion_for needs detect (else the scheduler plans both)")
            scheduler = self.scheduler(track)
            detect, emotion_for = scheduler.plan(frame.t, self.known_faces(track))
            coarse = bool(getattr(scheduler, "coarse_now", False))
            pace_actions(self.pipeline(track), getattr(scheduler, "actions_fps", None))
        assert detect is not None
        self._start_ahead(track, frame)
        result = self.pipeline(track).process(
            frame, detect, emotion_for, actions=actions, coarse=coarse, mouths=mouths
        )
        if planned:
            self.scheduler(track).observe(frame.t, result, detect)
        if received is not None:
            self._v0[track] = min(self._v0.get(track, math.inf), received - frame.t)
        return result, frame.t + self._v0.get(track, 0.0)

    def _start_ahead(self, track: str, frame: VideoFrame) -> None:
        """Start the detector on the track's upcoming frame when it will need it."""
        upcoming = self._upcoming.pop(track, None)
        if upcoming is None or upcoming[0] is frame:
            return
        nxt, planned = upcoming
        scheduler = self.scheduler(track) if planned else None
        due = getattr(scheduler, "detect_due", None)
        coarse = getattr(scheduler, "coarse_due", None)
        start = getattr(self.pipeline(track), "detect_ahead", None)
        if start is not None and (not planned or (due is not None and due(nxt.t))):
            start(nxt, coarse is not None and coarse(nxt.t))

    def exclude(self, number: int, excluded: bool) -> None:
        if excluded:
            self.excluded.add(number)
        else:
            self.excluded.discard(number)

    def reset(self) -> None:
        """Forget identities and exclusions; numbering restarts at 1."""
        for p in self.pipelines.values():
            p.reset()
        self.excluded.clear()
        self.numbering.reset()
        self._upcoming.clear()

    def tracklet_views(self) -> list[TrackletView]:
        """Every confirmed tracklet of the tracks (keys unique across tracks)."""
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


def pace_actions(pipeline: VisionStage, fps: float | None) -> None:
    """Let a scheduler set how often each face gets facial actions (the pipeline's action
    scheduler, when it has one; None: as configured)."""
    scheduler = getattr(getattr(pipeline, "actions", None), "scheduler", None)
    if fps is not None and scheduler is not None and hasattr(scheduler, "fps"):
        scheduler.fps = fps
