"""Several `serve` workers on one Redis: session directory, admission, event relay, wall feed.

The multi-node pattern of LiveKit: every worker owns the sessions whose publishers it serves and
advertises itself and them in Redis with a time to live that its heartbeat keeps renewing; the
owner publishes every event of a session on the session's channel, and any worker relays that
channel to viewers connected to it. Nothing here runs without `cluster.redis_url`, except the
supervisor wall, which then lists the worker's own sessions.

Redis keys (P is `cluster.prefix`; every record is JSON and expires after `cluster.ttl_s`
unless its owner's heartbeat renews it):
  P:worker:W      {id, url, capacity, sessions, ts}: a live worker
  P:workers       SET of worker ids (an id whose record expired is a dead worker; dropped)
  P:session:S     {session, worker, url, purpose, started, token_sha256, viewer_started, line}
  P:sessions      SET of session ids (an id whose record expired is dropped lazily)
Channels:
  P:events:S      every event of session S as sent to its subscribers (the owner publishes)
  P:control       kept subscribed so the relay connection is always listening

Admission (host.py): a worker holding `cluster.capacity` sessions, whatever their source, refuses
a new one and names the least loaded live worker with room (`room()`): a page publisher gets
`{"type": "error", "code": "redirect", "url": PAGE, "ws_url": WS}` then 4503; a WHIP publisher
503 with `X-Worker-With-Room`; `watch`/`join` a one-line error. With no such worker: 4503 / 503.
Viewers (`/ws/view?session=S&token=T`) may connect to any worker: the token is checked against
the SHA-256 stored in the directory (the token itself never is). A worker whose record expires
is dead: every other worker ends its relayed sessions with `session.ended` ("worker W lost")
within `ttl_s` + `heartbeat_s` of its last heartbeat.

Wall (`/ws/wall?token=cluster.wall_token`): every `wall_interval_s`, one `wall` event listing
every live call of the cluster, one line each: purpose, source (page, whip, watch, join),
owning worker, faces (name, dominant
expression, share of the call's speech), the call's dominant expression and speech share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.core.config import Config
from stream.core.errors import EmotionStreamError
from stream.live.events import NO_SESSION, SessionEnded, Wall, envelope
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

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

#: Most events waiting for Redis per session; frame events are dropped beyond it.
OUTBOX_LIMIT = 1024


def token_digest(token: str) -> str:
    """What the directory stores of a viewer token (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def ws_url(page_url: str) -> str:
    """The publisher WebSocket of a worker whose pages are at `page_url`."""
    base = page_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    return "ws://" + base.removeprefix("http://") + "/ws"


class WallLine:
    """One call's wall line, kept up to date from the session's own events.

    Speech is counted from `prosody` events (one per `hop_s` per speaker): `speech_share` is
    the share of the heard audio with speech, a face's `talk_share` its share of that speech.
    The call's attention comes from `frame` events (behaviour on): how many of the latest
    frame's faces look toward the screen, and the mean attention since the last line.
    """

    def __init__(self, session: LiveSession, worker: str, hop_s: float) -> None:
        self.session = session.id
        self.purpose = session.purpose
        self.via = session.via
        self.started = session.started
        self.clock = session.clock
        self.worker = worker
        self.hop_s = hop_s
        self.faces: dict[int, dict[str, Any]] = {}
        self.names: dict[int, str] = {}
        self.dominant: dict[str, Any] | None = None
        self.heard_s = 0.0
        self.speech_s: dict[int | None, float] = {}
        self.looking: dict[str, tuple[int, int]] = {}  # track -> (faces looking, faces)
        self._attention: list[float] = []  # per-frame mean attention since the last line

    def feed(self, ev: dict[str, Any]) -> None:
        """Take one published event into account."""
        t = ev["type"]
        if t in ("face.summary", "session.summary"):
            self.faces = {f["id"]: f for f in ev["faces"]}
            self.dominant = ev["overall"].get("dominant")
        elif t == "frame":
            att = [f["attention"] for f in ev["faces"] if "attention" in f]
            if att:
                self.looking[ev["track"]] = (sum(a >= 0.5 for a in att), len(att))
                self._attention.append(sum(att) / len(att))
            else:
                self.looking.pop(ev["track"], None)
        elif t == "face.renamed":
            self.names[ev["id"]] = ev["name"]
        elif t == "prosody":
            self.heard_s += self.hop_s
            if ev["speaking"]:
                face = ev["face_id"]
                self.speech_s[face] = self.speech_s.get(face, 0.0) + self.hop_s

    def to_dict(self) -> dict[str, Any]:
        speech = sum(self.speech_s.values())
        faces = []
        for fid, f in sorted(self.faces.items()):
            dom = f.get("dominant") or {}
            faces.append(
                {
                    "id": fid,
                    "name": self.names.get(fid, f.get("name", "")),
                    "dominant": {"label": dom.get("label"), "share": dom.get("share", 0.0)},
                    "talk_share": round(self.speech_s.get(fid, 0.0) / speech, 3)
                    if speech > 0
                    else None,
                }
            )
        return {
            "session": self.session,
            "worker": self.worker,
            "purpose": self.purpose,
            "via": self.via,
            "started": round(self.started, 3),
            "duration_s": round(max(self.clock() - self.started, 0.0), 1),
            "faces": faces,
            "dominant": self.dominant,
            "speech_share": round(speech / self.heard_s, 3) if self.heard_s > 0 else None,
            "attention": self._attention_line(),
        }

    def _attention_line(self) -> dict[str, Any] | None:
        """{"looking", "faces", "share"}: faces looking toward the screen on the latest frames,
        and the mean attention since the last line (None: no behaviour signals seen)."""
        if not self.looking:
            return None
        share = sum(self._attention) / len(self._attention) if self._attention else None
        self._attention = self._attention[-1:]
        return {
            "looking": sum(n for n, _ in self.looking.values()),
            "faces": sum(m for _, m in self.looking.values()),
            "share": None if share is None else round(share, 3),
        }


class _Outbox:
    """A session's events on their way to its channel: queued, sent in pipelined batches; when
    Redis falls `OUTBOX_LIMIT` events behind, frame events are dropped (counted)."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.items: deque[str | None] = deque()
        self.ready = asyncio.Event()
        self.dropped = 0
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        if len(self.items) >= OUTBOX_LIMIT and (
            event["type"] == "frame" or len(self.items) >= 4 * OUTBOX_LIMIT
        ):
            self.dropped += 1
            return
        self.items.append(json.dumps(event, separators=(",", ":")))
        self.ready.set()

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        warned = False
        while True:
            while not self.items:
                self.ready.clear()
                await self.ready.wait()
            batch = list(self.items)
            self.items.clear()
            done = None in batch
            try:
                pipe = self.redis.pipeline(transaction=False)
                for msg in batch:
                    if msg is not None:
                        pipe.publish(self.channel, msg)
                await pipe.execute()
            except (RedisError, OSError) as exc:
                if not warned:
                    log.warning("cannot relay events to Redis: %s", exc)
                    warned = True
            if done:
                return

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (at most `timeout` seconds), then stop."""
        self.closed = True
        self.items.append(None)
        self.ready.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        self.task.cancel()


@dataclass
class _Relayed:
    """A session owned by another worker, relayed to viewers here."""

    owner: str
    subs: set[Subscriber] = field(default_factory=set)
    seq: int = 0  # the last sequence number relayed


class Cluster:
    """This worker's part of the cluster (a no-op apart from the wall without `redis_url`).

    Args:
        config: the configuration (`cluster` section; `live` for limits and defaults).
        sessions: the server's own sessions by id (read, never changed).
    """

    def __init__(self, config: Config, sessions: Mapping[str, LiveSession]) -> None:
        self.config = config
        self.settings = config.cluster
        self.sessions = sessions
        self.enabled = bool(config.cluster.redis_url)
        #: New publishers beyond this many local sessions are sent elsewhere (or refused).
        self.capacity = config.live.max_sessions
        if self.enabled and config.cluster.capacity:
            self.capacity = config.cluster.capacity
        self.worker_id = config.cluster.worker_id
        self.url = config.cluster.worker_url
        self.redis: Redis | None = None
        self.pubsub: PubSub | None = None
        self.lines: dict[str, WallLine] = {}
        self.lost: dict[str, float] = {}  # dead worker -> when this worker noticed
        self._outboxes: dict[str, _Outbox] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._relayed: dict[str, _Relayed] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._halted = False

    # -- keys ------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.settings.prefix, *parts))

    @property
    def _ttl_ms(self) -> int:
        return round(self.settings.ttl_s * 1000)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, port: int) -> None:
        """Join the cluster (nothing without `redis_url`).

        Raises:
            EmotionStreamError: redis-py is not installed or Redis cannot be reached.
        """
        if not self.enabled:
            return
        try:
            from redis.asyncio import Redis
            from redis.exceptions import RedisError
        except ImportError:
            raise EmotionStreamError(
                "a cluster needs redis-py: pip install 'emotion-stream[cluster]'"
            ) from None
        host = self.config.live.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        self.worker_id = self.worker_id or f"{socket.gethostname()}-{port}"
        self.url = (self.url or f"http://{host}:{port}").rstrip("/") + "/"
        timeout = max(self.settings.ttl_s, 1.0)
        self.redis = Redis.from_url(
            self.settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        try:
            await self.redis.ping()
            self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await self.pubsub.subscribe(self._key("control"))
            await self._heartbeat()
        except (RedisError, OSError) as exc:
            await self.redis.aclose()
            self.redis = None
            raise EmotionStreamError(f"cannot reach Redis for the cluster: {exc}") from None
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat()), loop.create_task(self._listen())]
        log.info("worker %s joined the cluster (%s)", self.worker_id, self.url)

    async def halt(self) -> None:
        """Stop heartbeats and relaying at once without leaving the directory, as a crashed
        worker would (tests and failure drills: the others must notice by expiry)."""
        self._halted = True
        for task in self._tasks:
            task.cancel()
        # A relay task blocked in a Redis read may not see the cancellation until its connection
        # closes (seen in CI: halt hung for minutes), so it is awaited only briefly here and
        # again after the connection is closed below.
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for out in self._outboxes.values():
            out.closed = True
            out.task.cancel()
        # Closing the relay connection ends a read still waiting on its socket.
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def stop(self) -> None:
        """Leave the cluster: relayed viewers are told, this worker's records are removed."""
        if self.redis is None or self._halted:
            return
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a relay read may notice the cancellation only at close
            await asyncio.wait(self._tasks, timeout=2.0)
        for sid in list(self._relayed):
            self._end_relayed(sid, "worker shutting down")
        for sid in list(self._outboxes):
            await self._forget(sid)
        with contextlib.suppress(Exception):
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self._key("worker", self.worker_id))
            pipe.srem(self._key("workers"), self.worker_id)
            await pipe.execute()
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()  # type: ignore[no-untyped-call]
            await self.redis.aclose()
        self.redis = None

    # -- owner side ------------------------------------------------------------------------
    async def attach(self, session: LiveSession) -> None:
        """A session started here: feed its wall line and, in a cluster, list it in the
        directory and relay its events."""
        line = WallLine(session, self.worker_id or "local", self.config.audio.hop_s)
        self.lines[session.id] = line
        session.taps.append(line.feed)
        if self.redis is None:
            return
        out = _Outbox(self.redis, self._key("events", session.id))
        self._outboxes[session.id] = out
        session.taps.append(out.put)
        self._records[session.id] = {
            "session": session.id,
            "worker": self.worker_id,
            "url": self.url,
            "purpose": session.purpose,
            "started": session.started,
            "token_sha256": token_digest(session.viewer_token),
            "viewer_started": session.events.make(session.started_event("viewer")),
        }
        await self._heartbeat()

    async def detach(self, session: LiveSession) -> None:
        """A session here ended (after its last events were published)."""
        self.lines.pop(session.id, None)
        if session.id in self._outboxes:
            await self._forget(session.id)
            with contextlib.suppress(Exception):
                await self._heartbeat()

    async def _forget(self, sid: str) -> None:
        out = self._outboxes.pop(sid)
        self._records.pop(sid, None)
        await out.close()
        if self.redis is None or self._halted:
            return
        with contextlib.suppress(Exception):
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self._key("session", sid))
            pipe.srem(self._key("sessions"), sid)
            await pipe.execute()

    async def _heartbeat(self) -> None:
        """Renew this worker's record and its sessions' (with their wall lines)."""
        assert self.redis is not None
        record = {
            "id": self.worker_id,
            "url": self.url,
            "capacity": self.capacity,
            "sessions": len(self.sessions),
            "ts": time.time(),
        }
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key("worker", self.worker_id), json.dumps(record), px=self._ttl_ms)
        pipe.sadd(self._key("workers"), self.worker_id)
        for sid, rec in self._records.items():
            line = self.lines.get(sid)
            rec = {**rec, "line": line.to_dict() if line is not None else None}
            pipe.set(self._key("session", sid), json.dumps(rec), px=self._ttl_ms)
            pipe.sadd(self._key("sessions"), sid)
        await pipe.execute()

    async def _beat(self) -> None:
        """Heartbeat and watch the other workers, every `heartbeat_s`."""
        from redis.exceptions import RedisError

        while True:
            try:
                await self._heartbeat()
                await self._watch()
            except (RedisError, OSError) as exc:
                log.warning("cluster heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def workers(self) -> dict[str, dict[str, Any]]:
        """The live workers' records by id (expired ones are dropped from the set)."""
        assert self.redis is not None
        ids = sorted(str(w) for w in await self.redis.smembers(self._key("workers")))
        if not ids:
            return {}
        raw = await self.redis.mget([self._key("worker", w) for w in ids])
        alive = {w: json.loads(r) for w, r in zip(ids, raw, strict=True) if r is not None}
        dead = [w for w in ids if w not in alive and w != self.worker_id]
        if dead:
            await self.redis.srem(self._key("workers"), *dead)
        return alive

    async def _watch(self) -> None:
        """End relayed sessions whose owner died or which ended unseen."""
        assert self.redis is not None
        alive = await self.workers()
        now = time.monotonic()
        for sid, rel in list(self._relayed.items()):
            if rel.owner not in alive:
                if rel.owner not in self.lost:
                    self.lost[rel.owner] = now
                    log.warning("worker %s lost: its sessions end", rel.owner)
                self._end_relayed(sid, f"worker {rel.owner} lost")
        if self._relayed:
            sids = list(self._relayed)
            raw = await self.redis.mget([self._key("session", s) for s in sids])
            for sid, r in zip(sids, raw, strict=True):
                if r is None:
                    self._end_relayed(sid, "session ended")

    # -- admission -------------------------------------------------------------------------
    async def room(self) -> str | None:
        """The page URL of the least loaded other live worker with room (None: no cluster,
        Redis unreachable, or every worker full)."""
        if self.redis is None:
            return None
        try:
            alive = await self.workers()
        except Exception as exc:
            log.warning("cluster admission failed: %s", exc)
            return None
        room = [
            w for w in alive.values() if w["id"] != self.worker_id and w["sessions"] < w["capacity"]
        ]
        if not room:
            return None
        best = min(room, key=lambda w: (w["sessions"] / max(w["capacity"], 1), w["id"]))
        return str(best["url"])

    # -- viewer side -----------------------------------------------------------------------
    async def view(self, ws: ServerConnection, sid: str, token: str) -> bool:
        """Relay a session of another worker to a viewer here; False if no such session with
        that token is in the directory (the caller refuses the viewer)."""
        if self.redis is None or self.pubsub is None or not sid:
            return False
        try:
            raw = await self.redis.get(self._key("session", sid))
        except Exception as exc:
            log.warning("cluster directory unavailable: %s", exc)
            return False
        if raw is None:
            return False
        record = json.loads(raw)
        if not token_matches(token_digest(token), record["token_sha256"]):
            return False
        rel = self._relayed.get(sid)
        if (len(rel.subs) if rel else 0) >= self.config.live.max_viewers:
            await close_draining(ws, CLOSE_FULL, "too many viewers for this session")
            return True
        if rel is None:
            rel = self._relayed[sid] = _Relayed(record["worker"])
            await self.pubsub.subscribe(self._key("events", sid))
        sub = Subscriber(
            ws.send,
            "viewer",
            on_done=lambda: ws.close(1000, "session ended"),
            on_overflow=lambda: ws.close(CLOSE_TOO_SLOW, "too slow to receive events"),
        )
        rel.subs.add(sub)
        sub.offer(record["viewer_started"])
        # An end published before the subscription took effect is caught here or by _watch.
        if not await self.redis.exists(self._key("session", sid)):
            self._end_relayed(sid, "session ended")
        try:
            limit = RateLimit(self.config.live.max_messages_per_s)
            async for _ in ws:  # viewers only listen
                if not limit.allow():
                    await close_draining(ws, CLOSE_RATE, "too many messages")
                    break
        except ConnectionClosed:
            pass
        finally:
            sub.close()
            rel.subs.discard(sub)
            if not rel.subs and self._relayed.get(sid) is rel:
                await self._unrelay(sid)
        return True

    async def _unrelay(self, sid: str) -> None:
        """Stop relaying a session here (unless new viewers came for it meanwhile)."""
        rel = self._relayed.get(sid)
        if rel is not None and rel.subs:
            return
        self._relayed.pop(sid, None)
        if self.pubsub is not None and not self._halted:
            with contextlib.suppress(Exception):
                await self.pubsub.unsubscribe(self._key("events", sid))

    def _end_relayed(self, sid: str, reason: str) -> None:
        """Tell the viewers of a relayed session that it ended (the owner could not)."""
        rel = self._relayed.pop(sid, None)
        if rel is None:
            return
        ended = envelope(SessionEnded(reason), sid, rel.seq + 1, time.time())
        for sub in rel.subs:
            sub.offer(ended)
            sub.close()
        task = asyncio.get_running_loop().create_task(self._unrelay(sid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listen(self) -> None:
        """Hand each relayed event to this worker's viewers of its session."""
        assert self.pubsub is not None
        prefix = self._key("events", "")
        while True:
            try:
                async for msg in self.pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    channel: str = msg["channel"]
                    rel = self._relayed.get(channel.removeprefix(prefix))
                    if rel is None or not channel.startswith(prefix):
                        continue
                    event = json.loads(msg["data"])
                    rel.seq = max(rel.seq, int(event.get("seq", 0)))
                    for sub in list(rel.subs):
                        sub.offer(event)
                    if event.get("type") == "session.ended":
                        for sub in rel.subs:
                            sub.close()
                        rel.subs.clear()
                        await self._unrelay(event["session"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: resubscribe after a heartbeat
                log.warning("cluster relay interrupted: %s", exc)
                await asyncio.sleep(self.settings.heartbeat_s)
                with contextlib.suppress(Exception):
                    channels = [self._key("events", s) for s in self._relayed]
                    await self.pubsub.subscribe(self._key("control"), *channels)

    # -- wall ------------------------------------------------------------------------------
    async def calls(self) -> list[dict[str, Any]]:
        """Every live call's wall line: the cluster's from the directory (this worker's own
        fresh), or this worker's alone without Redis."""
        lines = {sid: line.to_dict() for sid, line in self.lines.items()}
        if self.redis is not None:
            sids = sorted(str(s) for s in await self.redis.smembers(self._key("sessions")))
            raw = await self.redis.mget([self._key("session", s) for s in sids]) if sids else []
            gone = []
            for sid, r in zip(sids, raw, strict=True):
                if r is None:
                    gone.append(sid)
                elif sid not in lines and (line := json.loads(r).get("line")):
                    lines[sid] = line
            if gone:
                await self.redis.srem(self._key("sessions"), *gone)
        return sorted(lines.values(), key=lambda c: (c["started"], c["session"]))

    async def wall(self, ws: ServerConnection, query: dict[str, list[str]]) -> None:
        """Send the wall every `wall_interval_s` to an operator with the wall token."""
        token = (query.get("token") or [""])[0]
        if not self.settings.wall_token or not token_matches(token, self.settings.wall_token):
            await close_draining(ws, CLOSE_UNAUTHORIZED, "the wall needs the operator token")
            return

        async def send() -> None:
            seq = 0
            while True:
                try:
                    calls = await self.calls()
                except Exception as exc:  # Redis down: keep the socket, try again
                    log.warning("wall: %s", exc)
                else:
                    await ws.send(json.dumps(envelope(Wall(calls), NO_SESSION, seq, time.time())))
                    seq += 1
                await asyncio.sleep(self.settings.wall_interval_s)

        sender = asyncio.get_running_loop().create_task(send())
        try:
            limit = RateLimit(self.config.live.max_messages_per_s)
            async for _ in ws:
                if not limit.allow():
                    await close_draining(ws, CLOSE_RATE, "too many messages")
                    break
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
