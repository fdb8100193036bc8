"""The session host: one object per process that owns everything live sessions share.

Every way into a live session (the publisher page, WHIP, `watch`, `join`) goes through two
verbs of `SessionHost`:

- `open(purpose, via)`: admission against `cluster.capacity` (`live.max_sessions` without a
  cluster); a new `LiveSession` on the host's loaded stages and executors; its directory record,
  wall line and event relay in the cluster (cluster.py); its viewer token. A full host raises
  `Refused`, naming a worker with room when the cluster has one: the page follows it (a
  `redirect` event), WHIP answers 503 naming it, `watch`/`join` print one line and exit.
- `close(session, reason)`: the summary and `session.ended` to every subscriber and relayed
  viewer, `--save-reports`, the directory record removed. Closing twice does nothing.

The host owns the process's `MachineBudget` (stream/analysis/budget.py): every session's video
tracks share the machine's inference time through it (fair shares by measured cost, the
decoding of received frames included, measured by `ThreadCpu`; turns oldest-first).

The host also serves viewers (`view`: a session here, or one of another worker relayed through
Redis) and shuts everything down (`shutdown`). The stages are injected (`StageSource`): the
server loads the real models, tests pass fakes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.analysis.budget import MachineBudget
from stream.analysis.stages import StageSource
from stream.core.config import Config
from stream.core.errors import EmotionStreamError
from stream.live import reports
from stream.live.cluster import Cluster
from stream.live.protocol import (
    CLOSE_FULL,
    CLOSE_RATE,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHORIZED,
    RateLimit,
    close_draining,
    token_matches,
)
from stream.live.session import LiveSession, Subscriber

log = logging.getLogger(__name__)

#: The ways into a session (`LiveSession.via`, shown on the wall).
VIA = ("page", "whip", "watch", "join", "test")


class Refused(EmotionStreamError):
    """No room for another session on this worker.

    Attributes:
        room: the page URL of a live worker with room (None: no worker of the cluster has any).
    """

    exit_code = 6

    def __init__(self, capacity: int, room: str | None) -> None:
        where = f"; worker {room} has room" if room else "; try again later"
        super().__init__(f"this worker is full ({capacity} session(s), cluster.capacity){where}")
        self.capacity = capacity
        self.room = room


class ThreadCpu:
    """Cumulative CPU seconds of this process by part, from its threads' names: "decode"
    (aiortc's per-track "video-decoder" threads of the page, WHIP and Janus; the URL reader
    "url-source" of `watch`, which decodes its audio too), "audio decode" ("audio-decoder"),
    "inference" (the "infer" executor threads), "voice" (the "voice" executor thread), "loop"
    (the event loop: RTP, SRTP, events), "python other" (other Python threads) and "native"
    (threads Python does not know: ONNX Runtime's intra-op pools, codec threads): the process
    total less the rest. Read from /proc (Linux); parts stay 0 where that is missing."""

    PARTS = ("decode", "audio decode", "inference", "voice", "loop", "python other", "native")

    def __init__(self) -> None:
        self._seen: dict[threading.Thread, tuple[str, float]] = {}  # CPU s when last read
        self._total = dict.fromkeys(self.PARTS, 0.0)
        self._lock = threading.Lock()

    @staticmethod
    def part(name: str) -> str:
        """The part a thread of this name belongs to."""
        if name in ("video-decoder", "url-source"):
            return "decode"
        if name == "audio-decoder":
            return "audio decode"
        if name.startswith("infer"):
            return "inference"
        if name.startswith("voice"):
            return "voice"
        return "loop" if name == "MainThread" else "python other"

    def read(self) -> dict[str, float]:
        """CPU seconds per part since the process started (threads that ended included)."""
        with self._lock:
            alive = threading.enumerate()
            self._seen = {t: v for t, v in self._seen.items() if t in alive}
            for t in alive:
                cpu = self._thread_cpu_s(t.native_id) if t.native_id is not None else None
                if cpu is None:
                    continue
                part, before = self._seen.get(t, (self.part(t.name), 0.0))
                self._total[part] += max(cpu - before, 0.0)
                self._seen[t] = (part, cpu)
            known = sum(v for k, v in self._total.items() if k != "native")
            self._total["native"] = max(self._total["native"], time.process_time() - known)
            return dict(self._total)

    def budget_parts(self) -> dict[str, float]:
        """The parts the machine budget measures: decode, inference (its threads and the
        native pools), loop, and "others": busy CPU of every other process of the machine
        (/proc/stat; absent where it cannot be read)."""
        cpu = self.read()
        parts = {
            "decode": cpu["decode"],
            "inference": cpu["inference"] + cpu["native"],
            "loop": cpu["loop"],
        }
        machine = self._machine_busy_s()
        if machine is not None:
            parts["others"] = machine - sum(cpu.values())
        return parts

    @staticmethod
    def _machine_busy_s() -> float | None:
        """Busy (not idle or iowait) CPU seconds of all cores since boot."""
        try:
            with open("/proc/stat", encoding="ascii") as f:
                ticks = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _thread_cpu_s(tid: int) -> float | None:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                return int(f.read().split()[0]) / 1e9  # ns on a CPU
        except (OSError, ValueError, IndexError):
            return None


class SessionHost:
    """Owns the loaded stages, the inference executors, the sessions, the cluster membership,
    viewers, summaries and report saving.

    Args:
        config: the configuration (`live` limits, `cluster`).
        stages: the loaded models (`Stages`), shared by every session.
        clock: wall clock of the sessions' events.
        pace: cap each session's analysis at `live.max_fps` in real time (off in tests).
    """

    def __init__(
        self,
        config: Config,
        stages: StageSource,
        clock: Callable[[], float] = time.time,
        pace: bool = True,
    ) -> None:
        self.config = config
        self.stages = stages
        self.clock = clock
        self.pace = pace
        #: The machine's analysis time, shared by every session's video tracks.
        self.cpu = ThreadCpu()
        self.budget = MachineBudget(config, self.cpu.budget_parts)
        self.executor = ThreadPoolExecutor(self.budget.workers, thread_name_prefix="infer")
        # Voice runs beside vision so that audio never waits behind video frames.
        self.audio_executor = ThreadPoolExecutor(1, thread_name_prefix="voice")
        self.sessions: dict[str, LiveSession] = {}
        self.cluster = Cluster(config, self.sessions)  # Redis directory and relay, if configured
        self.save_reports: Path | None = None  # --save-reports: write each session's reports

    @property
    def capacity(self) -> int:
        """Sessions this worker admits (`cluster.capacity`, or `live.max_sessions`)."""
        return self.cluster.capacity

    async def start(self, port: int) -> None:
        """Join the cluster, if configured (`port`: where this worker's pages are served)."""
        await self.cluster.start(port)

    # -- the two verbs ---------------------------------------------------------------------
    async def open(self, purpose: str, via: str) -> LiveSession:
        """A new session for a publisher who declared `purpose`, coming in `via` a source.

        Raises:
            Refused: this worker is full (`room` names a worker with room, if any).
        """
        if via not in VIA:
            raise ValueError(f"via must be one of {VIA}, not {via!r}")
        if len(self.sessions) >= self.capacity:
            raise Refused(self.capacity, await self.cluster.room())
        session = LiveSession(
            self.config,
            self.stages,
            self.executor,
            purpose,
            self.audio_executor,
            clock=self.clock,
            pace=self.pace,
            via=via,
            budget=self.budget,
        )
        self.sessions[session.id] = session
        await self.cluster.attach(session)
        shown = f", purpose: {purpose!r}" if purpose else ""
        log.info("session %s started via %s (consent given%s)", session.id, via, shown)
        return session

    async def close(self, session: LiveSession, reason: str) -> dict[str, Any] | None:
        """End a session: media stopped, summary and end event sent, reports saved when asked,
        its directory record removed. Returns the summary event (None if already closed)."""
        if self.sessions.get(session.id) is not session:
            return None
        del self.sessions[session.id]
        summary = await session.close(reason)
        faces = len(session.analysis.aggregator.faces())
        log.info("session %s ended: %s, %d face(s) seen", session.id, reason, faces)
        await self.cluster.detach(session)
        reports.save_quietly(session, self.save_reports)
        return summary

    # -- viewers ---------------------------------------------------------------------------
    async def view(self, ws: ServerConnection, sid: str, token: str) -> None:
        """Send a session's events to a read-only viewer until it leaves or the session ends:
        a session here, or one of another worker relayed through Redis."""
        session = self.sessions.get(sid)
        if session is None and await self.cluster.view(ws, sid, token):
            return  # a session of another worker, relayed
        if session is None or not token_matches(token, session.viewer_token):
            await close_draining(ws, CLOSE_UNAUTHORIZED, "unknown session or wrong token")
            return
        viewers = sum(1 for s in session.subscribers if s.role == "viewer")
        if viewers >= self.config.live.max_viewers:
            await close_draining(ws, CLOSE_FULL, "too many viewers for this session")
            return
        sub = Subscriber(
            ws.send,
            "viewer",
            on_done=lambda: ws.close(1000, "session ended"),
            on_overflow=lambda: ws.close(CLOSE_TOO_SLOW, "too slow to receive events"),
        )
        session.subscribe(sub)
        try:
            limit = RateLimit(self.config.live.max_messages_per_s)
            async for _ in ws:  # viewers only listen; anything they send is ignored
                if not limit.allow():
                    await close_draining(ws, CLOSE_RATE, "too many messages")
                    break
        except ConnectionClosed:
            pass
        finally:
            session.unsubscribe(sub)

    # -- lifecycle -------------------------------------------------------------------------
    async def shutdown(self, reason: str = "server shutting down") -> list[dict[str, Any]]:
        """Close every session and leave the cluster; returns the summaries of the sessions
        it closed."""
        summaries = []
        for session in list(self.sessions.values()):
            summary = await self.close(session, reason)
            if summary is not None:
                summaries.append(summary)
        await self.cluster.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.audio_executor.shutdown(wait=False, cancel_futures=True)
        return summaries
