"""`emotion-stream join`: a bot in a Janus VideoRoom that analyses every participant.

The bot speaks Janus's WebSocket API (subprotocol "janus-protocol"): it creates a Janus session,
joins the room as a participant that never publishes (so it hears `publishers`, `leaving` and
`unpublished` events), and for each publisher attaches one subscriber handle with its own aiortc
peer: Janus sends the offer, the bot answers and sends `start`. Every participant's video and
audio become tracks of ONE live session (one face numbering for the whole room); the faces first
seen on a participant's video are named after their display name ("Alice", "Alice 2").
A participant who leaves has their peer closed, so their tracks end, and viewers get an `error`
event `participant_left` (the code says it is news, not a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from stream.analysis.stages import StageSource
from stream.core.config import Config
from stream.live.events import Error
from stream.live.protocol import printable
from stream.live.source import TrackSink
from stream.live.webrtc import answer_peer

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
#: Janus ends a session after 60 s without a request (its `session_timeout`).
KEEPALIVE_S = 25.0

T = TypeVar("T")


class JanusError(Exception):
    """A Janus request failed (the message is one line for the user)."""


@dataclass
class Handle:
    """A plugin handle; `events` gets its messages that answer no pending request."""

    id: int
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class JanusClient:
    """One Janus session over the WebSocket API: requests, handles, their events, keepalives.

    Args:
        url: the WebSocket URL (ws:// or wss://).
        timeout: seconds to wait for each answer.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.ws: ClientConnection | None = None
        self.session_id = 0
        self.handles: dict[int, Handle] = {}
        self.closed = asyncio.Event()  # the connection or the Janus session ended
        self._pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    async def connect(self) -> None:
        """Open the WebSocket and create the Janus session."""
        try:
            self.ws = await asyncio.wait_for(
                connect(
                    self.url,
                    subprotocols=[Subprotocol("janus-protocol")],
                    max_size=2**22,
                    open_timeout=None,
                ),
                self.timeout,
            )
        except TimeoutError:
            raise JanusError(f"no answer from {self.url} in {self.timeout:g} s") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise JanusError(f"cannot reach Janus at {self.url}: {exc}") from None
        self._tasks.append(asyncio.get_running_loop().create_task(self._read()))
        reply = await self.request({"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._tasks.append(asyncio.get_running_loop().create_task(self._keepalive()))

    async def request(self, msg: dict[str, Any], expect: str = "success") -> dict[str, Any]:
        """Send a request and return its answer (`expect`: "success", "ack" or "event")."""
        if self.ws is None or self.closed.is_set():
            raise JanusError("the connection to Janus is closed")
        transaction = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (expect, fut)
        msg = {**msg, "transaction": transaction}
        if self.session_id and "session_id" not in msg and msg["janus"] != "create":
            msg["session_id"] = self.session_id
        try:
            await self.ws.send(json.dumps(msg))
            closed: asyncio.Future[Any] = asyncio.ensure_future(self.closed.wait())
            try:
                done, _ = await asyncio.wait(
                    {fut, closed}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closed.cancel()
            if fut not in done:
                why = "the connection closed" if self.closed.is_set() else "no answer"
                raise JanusError(f"Janus {msg['janus']} request: {why} ({self.timeout:g} s)")
            reply = fut.result()
        except ConnectionClosed:
            raise JanusError("the connection to Janus closed") from None
        finally:
            self._pending.pop(transaction, None)
        if reply.get("janus") == "error":
            err = reply.get("error", {})
            raise JanusError(f"Janus error {err.get('code')}: {err.get('reason')}")
        return reply

    async def attach(self, plugin: str = VIDEOROOM) -> Handle:
        reply = await self.request({"janus": "attach", "plugin": plugin})
        handle = Handle(int(reply["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    async def message(
        self, handle: Handle, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request; returns the plugin's data and JSEP (synchronous or event answer)."""
        msg: dict[str, Any] = {"janus": "message", "handle_id": handle.id, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self.request(msg, expect="event")
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']} ({data.get('error_code')})")
        return data, reply.get("jsep")

    async def detach(self, handle: Handle) -> None:
        self.handles.pop(handle.id, None)
        with contextlib.suppress(JanusError):
            await self.request({"janus": "detach", "handle_id": handle.id})

    async def close(self) -> None:
        """Destroy the Janus session (its handles go with it) and close the connection."""
        if self.session_id and not self.closed.is_set():
            with contextlib.suppress(JanusError):
                await self.request({"janus": "destroy"})
        self.closed.set()
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def _keepalive(self) -> None:
        while not self.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), KEEPALIVE_S)
                return
            try:
                await self.request({"janus": "keepalive"}, expect="ack")
            except JanusError as exc:
                log.warning("Janus keepalive failed: %s", exc)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self._dispatch(msg)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("janus")
        pending = self._pending.get(str(msg.get("transaction")))
        if pending is not None:
            expect, fut = pending
            if kind in ("success", "error") or kind == expect:
                if not fut.done():
                    fut.set_result(msg)
                return
        if kind == "ack":
            return
        if kind == "timeout":  # the Janus session expired
            self.closed.set()
            return
        handle = self.handles.get(int(msg.get("sender") or 0))
        if handle is not None:
            handle.events.put_nowait(msg)


@dataclass
class Participant:
    """A publisher of the room the bot subscribes to."""

    feed: int
    display: str
    handle: Handle | None = None
    peer: Any = None
    tracks: list[str] = field(default_factory=list)
    open_tracks: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # all its tracks have ended
    left: bool = False


def display_name(publisher: dict[str, Any]) -> str:
    """A publisher's display name as its faces are named: the name Janus relays (any text a
    participant chose), or "Participant ID" when it is missing or not printable (controls,
    bidi overrides: see `protocol.printable`)."""
    try:
        return printable(publisher.get("display"), "display name")
    except ValueError:
        return f"Participant {publisher['id']}"


class JanusRoomBot:
    """Subscribes to every publisher of a VideoRoom and feeds their tracks to one session: the
    session's `MediaSource` (`start` joins the room, `close` leaves it).

    Args:
        config: the configuration (ICE servers, whether audio is analysed).
        url: Janus's WebSocket URL.
        room: the VideoRoom's numeric ID.
        display: the bot's display name in the room.
        pin: the room's PIN, when it has one.
        timeout: seconds to wait for each Janus answer.
        ice_addresses: gather ICE host candidates on these addresses only (None: every
            interface but loopback; Janus never offers loopback candidates, so a bot and a
            Janus on one machine meet on its own address).
    """

    def __init__(
        self,
        config: Config,
        url: str,
        room: int,
        display: str = "emotion-stream",
        pin: str | None = None,
        timeout: float = 10.0,
        ice_addresses: list[str] | None = None,
    ) -> None:
        self.config = config
        self.sink: TrackSink | None = None  # the session, once started
        self.url = url
        self.room = room
        self.display = display
        self.pin = pin
        self.client = JanusClient(url, timeout)
        self.participants: dict[int, Participant] = {}
        self.private_id: int | None = None
        self.done = asyncio.Event()  # the room is gone for the bot (connection, kicked)
        self._listener: Handle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._ice = ice_addresses
        self._closing = False

    async def start(self, sink: TrackSink) -> None:
        """Join the room; every participant's tracks go to `sink`.

        Raises:
            JanusError: Janus cannot be reached or the room cannot be joined (one line).
        """
        self.sink = sink
        await self.join()

    @property
    def session(self) -> TrackSink:
        assert self.sink is not None, "start the bot first"
        return self.sink

    async def join(self) -> None:
        """Connect, join the room and subscribe to its current publishers."""
        await self.client.connect()
        self._listener = await self.client.attach()
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "publisher",
            "room": self.room,
            "display": self.display,
        }
        if self.pin:
            body["pin"] = self.pin
        try:
            data, _ = await self.client.message(self._listener, body)
        except JanusError as exc:
            await self.client.close()
            raise JanusError(f"cannot join room {self.room}: {exc}") from None
        self.private_id = data.get("private_id")
        log.info("joined Janus room %s as %r", self.room, self.display)
        await self._publishers(data.get("publishers", []))
        self._task = asyncio.get_running_loop().create_task(self._follow())

    def stop(self) -> None:
        """Stop following the room (the session closes the peers through `close`)."""
        self._closing = True

    async def close(self) -> None:
        """Leave the room: close every peer (their tracks end) and the Janus session."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        for p in list(self.participants.values()):
            await self._drop(p, announce=False)
        await self.client.close()
        self.done.set()

    # -- room events -----------------------------------------------------------------------
    async def _follow(self) -> None:
        assert self._listener is not None
        events = self._listener.events
        closed = asyncio.ensure_future(self.client.closed.wait())
        try:
            while not self._closing:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    if not self._closing:
                        self.session.publish(Error("janus_closed", "the connection to Janus ended"))
                    return
                await self._room_event(get.result())
        except Exception as exc:  # keep the session; say why the room is no longer followed
            log.exception("following the Janus room failed")
            self.session.publish(Error("janus_failed", f"following the room failed: {exc}"))
        finally:
            closed.cancel()
            self.done.set()

    async def _room_event(self, msg: dict[str, Any]) -> None:
        if msg.get("janus") == "detached":
            raise JanusError("Janus detached the bot from the room")
        data = msg.get("plugindata", {}).get("data", {})
        if data.get("videoroom") == "destroyed":
            raise JanusError(f"room {self.room} was destroyed")
        if "publishers" in data:
            await self._publishers(data["publishers"])
        for key in ("leaving", "unpublished"):
            feed = data.get(key)
            if isinstance(feed, int) and feed in self.participants:
                await self._drop(self.participants[feed], announce=True)
        if data.get("leaving") == "ok" or data.get("reason") == "kicked":
            raise JanusError("the bot was removed from the room")

    async def _publishers(self, publishers: list[dict[str, Any]]) -> None:
        new = [p for p in publishers if int(p["id"]) not in self.participants]
        for p in new:
            self.participants[int(p["id"])] = Participant(int(p["id"]), display_name(p))
        results = await asyncio.gather(
            *(self._subscribe(self.participants[int(p["id"])]) for p in new),
            return_exceptions=True,
        )
        for p, r in zip(new, results, strict=True):
            if isinstance(r, BaseException):
                who = self.participants[int(p["id"])].display
                log.warning("cannot subscribe to %s: %s", who, r)
                self.session.publish(Error("subscribe_failed", f"cannot receive {who}: {r}"))

    # -- one participant -------------------------------------------------------------------
    async def _subscribe(self, p: Participant) -> None:
        """Attach a subscriber handle for one publisher, answer Janus's offer, start media."""
        p.handle = await self.client.attach()
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.room,
            "streams": [{"feed": p.feed}],
        }
        if self.private_id is not None:
            body["private_id"] = self.private_id
        if self.pin:
            body["pin"] = self.pin
        _, jsep = await self.client.message(p.handle, body)
        if not jsep or jsep.get("type") != "offer":
            raise JanusError("Janus sent no offer for the subscription")

        def label(track: Any) -> str:
            name = f"janus-{p.feed}-{track.kind}"
            if track.kind == "video" or (track.kind == "audio" and self.config.audio.enabled):
                p.tracks.append(name)
            return name

        async def on_state(pc: Any) -> None:
            if pc.connectionState == "failed" and not p.left:
                self.session.publish(
                    Error("peer_failed", f"the media connection for {p.display} failed")
                )
                await self._drop(p, announce=False)

        def until_end(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
            return self._until_end(p, source)

        p.peer = await answer_peer(
            self.config, jsep["sdp"], self.session, self._ice, label, p.display, until_end, on_state
        )
        answer = {"type": "answer", "sdp": p.peer.localDescription.sdp}
        await self.client.message(p.handle, {"request": "start"}, answer)
        log.info("receiving %s (feed %s): %s", p.display, p.feed, ", ".join(p.tracks))

    async def _until_end(self, p: Participant, source: AsyncIterator[T]) -> AsyncIterator[T]:
        """The source's items; when the last of a participant's tracks ends, `p.ended` is set."""
        p.open_tracks += 1
        try:
            async for item in source:
                yield item
        finally:
            p.open_tracks -= 1
            if p.open_tracks == 0:
                p.ended.set()

    async def _drop(self, p: Participant, announce: bool) -> None:
        """Stop receiving a participant: close their peer (their tracks end), detach."""
        if p.left:
            return
        p.left = True
        if announce:
            log.info("%s left the room", p.display)
            self.session.publish(
                Error("participant_left", f"{p.display} left the room; their tracks ended")
            )
        if p.peer is not None:
            with contextlib.suppress(Exception):
                await p.peer.close()
        if p.open_tracks == 0:
            p.ended.set()
        if p.handle is not None and not self.client.closed.is_set():
            await self.client.detach(p.handle)


async def run_join(
    config: Config,
    url: str,
    room: int,
    purpose: str,
    display: str = "emotion-stream",
    pin: str | None = None,
    events: Any = None,
    reports_dir: Any = None,
    duration: float | None = None,
    stages: StageSource | None = None,
) -> dict[str, Any] | None:
    """`emotion-stream join`: the bot in a room, with the viewer page, events and reports of
    `watch`; ends when the connection to Janus ends, after `duration`, or at Ctrl-C / SIGTERM.

    Returns:
        The session summary event.
    """
    from stream.live.runner import run_live
    from stream.live.url import redact

    bot = JanusRoomBot(config, url, room, display, pin)
    what = f"in Janus room {room} at {redact(url)} as {display!r}"
    return await run_live(config, purpose, bot, "join", what, events, reports_dir, duration, stages)
