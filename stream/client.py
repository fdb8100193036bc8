"""A Python client of the live server: view a session's events, or publish media and read them.

    import asyncio
    from stream import client

    async def main() -> None:
        async for event in client.publish("ws://127.0.0.1:8080/ws", "call.mp4",
                                          purpose="team retro, everyone agreed"):
            if isinstance(event, client.Frame):
                print(event.media_t, [(f["id"], f.get("label")) for f in event.faces])

    asyncio.run(main())

Events are the server's typed events (`stream.live.events`, wire schema version
`SCHEMA_VERSION`): `SessionStarted`, `Answer`, `Frame`, `FaceSummaries`, `Prosody`,
`SpeakerActive`, `FaceRenamed`, `FaceExcluded`, `SpeakerRenamed`, `SessionReset`, `Error`,
`SessionSummary`, `SessionEnded`, `Redirect`, `Wall`; a type this version does not know arrives
as `UnknownEvent`, and fields it does not know are ignored (see README "Stability").

Published video goes out at most at the rate and size the server analyses (`SessionStarted.send`;
`SendLimit` drops and scales frames before aiortc encodes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import av
import numpy as np
import websockets
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from stream.core.errors import EmotionStreamError, MediaError
from stream.live.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Answer,
    Error,
    Event,
    FaceExcluded,
    FaceRenamed,
    FaceSummaries,
    Frame,
    Prosody,
    Redirect,
    SessionEnded,
    SessionReset,
    SessionStarted,
    SessionSummary,
    SpeakerActive,
    SpeakerRenamed,
    Wall,
)

__all__ = [
    "SCHEMA_VERSION",
    "Answer",
    "Error",
    "Event",
    "FaceExcluded",
    "FaceRenamed",
    "FaceSummaries",
    "Frame",
    "FramesTrack",
    "LiveError",
    "Prosody",
    "Publication",
    "Redirect",
    "SendLimit",
    "SessionEnded",
    "SessionReset",
    "SessionStarted",
    "SessionSummary",
    "SpeakerActive",
    "SpeakerRenamed",
    "UnknownEvent",
    "Wall",
    "connect",
    "parse_event",
    "publish",
    "view",
]

#: Close codes of the server (stream/live/protocol.py) and what they mean to a client.
CLOSE_REASONS = {
    4400: "too many invalid messages",
    4401: "unknown session or wrong token",
    4408: "no offer in time",
    4409: "too slow to receive events",
    4429: "too many messages per second",
    4503: "the server is full",
}
_ENVELOPE = ("v", "type", "session", "seq", "ts")
MAX_MESSAGE = 2**22
#: After the published media end, `bye` waits until no frame event came for this long (the
#: server analyses what it has received) ...
LINGER_QUIET_S = 1.5
#: ... but no longer than this.
LINGER_MAX_S = 10.0


class LiveError(EmotionStreamError):
    """The live server refused or dropped the connection, or could not be reached.

    Attributes:
        code: the WebSocket close code (0: none), e.g. 4401 wrong session or token.
        redirect: where a full worker sent a publisher (a page URL), else "".
    """

    exit_code = 6

    def __init__(self, message: str, code: int = 0, redirect: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.redirect = redirect


@dataclass(frozen=True)
class UnknownEvent(Event):
    """An event type this client does not know (a newer server): its wire type and fields."""

    TYPE: ClassVar[str] = "unknown"
    type: str
    data: dict[str, Any]


_BY_TYPE: dict[str, type[Event]] = {c.TYPE: c for c in EVENT_TYPES if c is not Redirect}


def parse_event(message: dict[str, Any] | str) -> Event:
    """The typed event of one server message (JSON text or decoded).

    Raises:
        LiveError: the message is of another schema version than this client reads.
    """
    msg: dict[str, Any] = json.loads(message) if isinstance(message, str) else message
    if msg.get("v") != SCHEMA_VERSION:
        raise LiveError(
            f"the server sends events of schema version {msg.get('v')}; this client reads "
            f"version {SCHEMA_VERSION} (install the emotion-stream version the server runs)"
        )
    kind = str(msg.get("type"))
    cls = Redirect if kind == "error" and msg.get("code") == "redirect" else _BY_TYPE.get(kind)
    if cls is None:
        return UnknownEvent(kind, {k: v for k, v in msg.items() if k not in _ENVELOPE})
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is Prosody:  # the prosody report is sent inline, after the speaker fields
        report = {k: v for k, v in msg.items() if k not in names and k not in _ENVELOPE}
        fields: dict[str, Any] = {k: msg.get(k) for k in names if k != "report"}
        return Prosody(**fields, report=report)
    return cls(**{k: msg[k] for k in names if k in msg})


def _ws_url(url: str, path: str) -> str:
    """`url` (a page `http(s)://host:port/...` or a `ws(s)://` URL) with `path` on the same
    server, as a WebSocket URL."""
    u = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(u.scheme)
    if scheme is None or not u.netloc:
        raise LiveError(f"not a server URL: {url!r} (e.g. http://127.0.0.1:8080)")
    return urlunsplit((scheme, u.netloc, path, "", ""))


def _closed(exc: websockets.ConnectionClosed, url: str) -> LiveError:
    code = exc.rcvd.code if exc.rcvd is not None else 1006
    why = CLOSE_REASONS.get(code) or (exc.rcvd.reason if exc.rcvd else "") or "connection lost"
    return LiveError(f"{url}: {why} (close code {code})", code)


async def view(url: str, session: str, token: str) -> AsyncIterator[Event]:
    """A session's events as a read-only viewer, until the session ends.

    Args:
        url: the server (`http://host:8080`, or its `ws://` URL).
        session: the session id (a publisher's `SessionStarted` events carry it in the
            envelope; the page's viewer link has `?session=`).
        token: the session's viewer token (`SessionStarted.viewer_token` of its publisher).

    Raises:
        LiveError: cannot connect, unknown session or wrong token (code 4401), too many
            viewers (4503), or the connection was dropped.
    """
    target = _ws_url(url, "/ws/view") + "?" + urlencode({"session": session, "token": token})
    try:
        async with websockets.connect(target, max_size=MAX_MESSAGE) as ws:
            async for raw in ws:
                event = parse_event(str(raw))
                yield event
                if isinstance(event, SessionEnded):
                    return
    except websockets.ConnectionClosedError as exc:
        raise _closed(exc, url) from None
    except (OSError, websockets.InvalidHandshake) as exc:
        raise LiveError(f"cannot connect to {url}: {exc}") from None


class FramesTrack(MediaStreamTrack):
    """A WebRTC video track from your own frames: `(image, t)` pairs (HxWx3 uint8, BGR unless
    `rgb`; t in seconds), from an iterable or an async iterable, sent in real time by t."""

    kind = "video"

    def __init__(
        self,
        frames: Iterable[tuple[Any, float]] | AsyncIterable[tuple[Any, float]],
        rgb: bool = False,
    ) -> None:
        super().__init__()
        self._frames = frames
        self._sync = iter(frames) if isinstance(frames, Iterable) else None
        self._async = aiter(frames) if isinstance(frames, AsyncIterable) else None
        self._fmt = "rgb24" if rgb else "bgr24"
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sync is not None:
            item = next(self._sync, None)
        else:
            assert self._async is not None
            item = await anext(self._async, None)
        if item is None:
            self.stop()
            raise MediaStreamError
        image, t = item
        now = time.monotonic()
        if self._start is None:
            self._start = now - t
        wait = self._start + t - now
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, np.uint8), self._fmt)
        frame.pts = round(t * 90_000)
        frame.time_base = Fraction(1, 90_000)
        return frame


class SendLimit(MediaStreamTrack):
    """A video track passed on as the server asks (`SessionStarted.send`): at most `max_fps`
    frames per second of media time (the others are dropped before encoding) and the longer
    side scaled down to at most `max_side` pixels. Every frame passes until `limit` is called.

    Attributes:
        passed: frames passed on so far.
        dropped: frames dropped so far (above `max_fps`).
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.max_fps: float | None = None
        self.max_side: int | None = None
        self.passed = 0
        self.dropped = 0
        self._due: float | None = None  # media time of the next frame to pass on
        source.on("ended", self.stop)

    def limit(self, send: dict[str, float], with_audio: bool = False) -> None:
        """Apply the server's `send` (`{"max_fps": F, "max_fps_with_audio": A, "max_side": N}`)
        from the next frame: A frames per second when audio is published too, else F."""
        fps, side = float(send["max_fps"]), int(send["max_side"])
        if with_audio and send.get("max_fps_with_audio"):
            fps = float(send["max_fps_with_audio"])
        if not (fps > 0 and side > 0):
            raise LiveError(f"the server asks for an impossible video: {send}")
        self.max_fps, self.max_side = fps, side

    def _keep(self, t: float) -> bool:
        if self.max_fps is None:
            return True
        step = 1.0 / self.max_fps
        if self._due is not None and t < self._due - min(0.005, step / 4):
            return False
        # Due times advance by whole steps (a 25 fps source limited to 10 passes 10 a second),
        # restarting after a gap.
        self._due = t + step if self._due is None or self._due + step <= t else self._due + step
        return True

    def _scaled(self, frame: av.VideoFrame) -> av.VideoFrame:
        side = max(frame.width, frame.height)
        if self.max_side is None or side <= self.max_side:
            return frame
        k = self.max_side / side
        w, h = max(2, round(frame.width * k / 2) * 2), max(2, round(frame.height * k / 2) * 2)
        out = frame.reformat(width=w, height=h)
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                self.stop()
                raise
            assert isinstance(frame, av.VideoFrame)
            t = frame.time if frame.time is not None else time.monotonic()
            if self._keep(t):
                self.passed += 1
                return self._scaled(frame)
            self.dropped += 1

    def stop(self) -> None:
        super().stop()
        self.source.stop()


Source = str | Path | MediaStreamTrack | list[MediaStreamTrack] | Iterable[Any] | AsyncIterable[Any]


def _tracks(
    source: Source,
    audio: bool,
    format: str | None,
    options: dict[str, str] | None,
    loop: bool,
    rgb: bool,
) -> list[MediaStreamTrack]:
    if isinstance(source, MediaStreamTrack):
        return [source]
    if isinstance(source, list) and all(isinstance(t, MediaStreamTrack) for t in source):
        return list(source)
    if isinstance(source, str | Path):
        try:
            player = MediaPlayer(str(source), format=format, options=options or {}, loop=loop)
        except (OSError, av.error.FFmpegError) as exc:
            raise MediaError(f"{source}: cannot open ({exc})") from None
        tracks = [player.video, player.audio if audio else None]
        out = [t for t in tracks if t is not None]
        if not out:
            raise MediaError(f"{source}: no video or audio to publish")
        return out
    if isinstance(source, Iterable | AsyncIterable):
        frames: Any = source  # (image, t) pairs
        return [FramesTrack(frames, rgb)]
    raise MediaError(f"cannot publish a {type(source).__name__}: give a file, device or frames")


class Publication:
    """A publisher's connection (from `connect`): its events, and the commands it may send.

    Attributes:
        session: the session id (once `SessionStarted` arrived).
        viewer_token: the token `view` needs to watch this session.
    """

    def __init__(
        self, url: str, ws: Any, pc: RTCPeerConnection, tracks: list[MediaStreamTrack]
    ) -> None:
        self.url = url
        self.ws = ws
        self.pc = pc
        self.session: str | None = None
        self.viewer_token: str | None = None
        self._ended = asyncio.Event()
        self._live = len(tracks)
        self._bye_sent = False
        for track in tracks:
            track.on("ended", self._track_ended)
        #: the video tracks, sent as the server asks (`SessionStarted.send`)
        self.limits = [t for t in tracks if isinstance(t, SendLimit)]
        self._with_audio = any(t.kind == "audio" for t in tracks)

    def _track_ended(self) -> None:
        self._live -= 1
        if self._live <= 0:
            self._ended.set()

    async def send(self, command: dict[str, Any]) -> None:
        """Send a command (`rename`, `exclude`, `rename_speaker`, `reset`, `bye`; see the
        schema's `command` definitions)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(json.dumps(command))

    async def rename(self, face_id: int, name: str) -> None:
        """Name a face in every event and report of the session."""
        await self.send({"type": "rename", "id": face_id, "name": name})

    async def exclude(self, face_id: int, excluded: bool = True) -> None:
        """Stop (or resume) analysing a face's expression."""
        await self.send({"type": "exclude", "id": face_id, "excluded": excluded})

    async def rename_speaker(self, voice_id: int, name: str) -> None:
        """Name a diarized voice ("Speaker N")."""
        await self.send({"type": "rename_speaker", "id": voice_id, "name": name})

    async def reset(self) -> None:
        """Forget identities, names and aggregates; numbering restarts at 1."""
        await self.send({"type": "reset"})

    async def bye(self) -> None:
        """End the session: the server sends its summary and `SessionEnded`."""
        if not self._bye_sent:
            self._bye_sent = True
            await self.send({"type": "bye"})

    async def events(self) -> AsyncIterator[Event]:
        """The session's events until it ends; the answer is applied on the way. When the
        published media end, `bye` is sent once the server has caught up (no frame event for
        `LINGER_QUIET_S`, at most `LINGER_MAX_S`); the summary follows.

        Raises:
            LiveError: the server refused (full: `redirect` names a worker with room) or
                dropped the connection.
        """
        ended = asyncio.ensure_future(self._ended.wait())
        recv: asyncio.Future[Any] | None = None
        last = time.monotonic()  # the latest frame event
        ended_at: float | None = None
        try:
            while True:
                if recv is None:
                    recv = asyncio.ensure_future(self.ws.recv())
                timeout = None
                if ended.done() and not self._bye_sent:
                    now = time.monotonic()
                    ended_at = ended_at or now
                    wait = min(last + LINGER_QUIET_S, ended_at + LINGER_MAX_S) - now
                    if wait <= 0:
                        await self.bye()
                    else:
                        timeout = wait
                pending = {recv} if ended.done() else {recv, ended}
                await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    continue
                done, recv = recv, None
                try:
                    raw = done.result()
                except websockets.ConnectionClosedOK:
                    return
                except websockets.ConnectionClosedError as exc:
                    raise _closed(exc, self.url) from None
                event = parse_event(str(raw))
                if isinstance(event, Redirect):
                    raise LiveError(event.message, 4503, event.url)
                if isinstance(event, SessionStarted):
                    self.viewer_token = event.viewer_token
                    self.session = json.loads(raw).get("session")
                    for track in self.limits:
                        if event.send:
                            track.limit(event.send, self._with_audio)
                elif isinstance(event, Answer):
                    await self.pc.setRemoteDescription(RTCSessionDescription(event.sdp, "answer"))
                elif isinstance(event, Frame):
                    last = time.monotonic()
                yield event
                if isinstance(event, SessionEnded):
                    return
        finally:
            ended.cancel()
            if recv is not None:
                recv.cancel()


@contextlib.asynccontextmanager
async def connect(
    url: str,
    source: Source,
    *,
    purpose: str,
    audio: bool = True,
    format: str | None = None,
    options: dict[str, str] | None = None,
    loop: bool = False,
    rgb: bool = False,
    ice_servers: list[dict[str, str]] | None = None,
) -> AsyncIterator[Publication]:
    """Publish `source` to the live server over WebRTC: say hello with consent and `purpose`,
    send the offer; yields the `Publication` (events, commands). Arguments as `publish`."""
    # Video is sent at most at the rate and size the server analyses (it says in
    # session.started, before any media flow): aiortc's sender takes no encoding limits.
    tracks = [
        SendLimit(t) if t.kind == "video" else t
        for t in _tracks(source, audio, format, options, loop, rgb)
    ]
    from aiortc import RTCIceServer

    servers = [RTCIceServer(**s) for s in ice_servers or []]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    for track in tracks:
        pc.addTrack(track)
    target = _ws_url(url, "/ws")
    try:
        async with websockets.connect(target, max_size=MAX_MESSAGE) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True, "purpose": purpose}))
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            pub = Publication(url, ws, pc, tracks)
            try:
                yield pub
            finally:
                await pub.bye()
    except (OSError, websockets.InvalidHandshake) as exc:
        raise LiveError(f"cannot connect to {url}: {exc}") from None
    finally:
        await pc.close()
        for track in tracks:
            track.stop()


async def publish(
    url: str,
    source: Source,
    *,
    purpose: str,
    audio: bool = True,
    format: str | None = None,
    options: dict[str, str] | None = None,
    loop: bool = False,
    rgb: bool = False,
    ice_servers: list[dict[str, str]] | None = None,
) -> AsyncIterator[Event]:
    """Publish a file, a camera or your own frames and yield the session's events until it
    ends (the media end, or you stop iterating: then `bye` is sent).

    By publishing you declare that the people in the media were told what is analysed and
    why (`purpose`) and agreed: the server records the purpose with the session.

    Args:
        url: the server (`http://host:8080`, or its publisher socket `ws://host:8080/ws`).
        source: a media file or URL ffmpeg reads; a camera device with `format` (e.g.
            `"/dev/video0"`, `format="v4l2"`; `"0"`, `format="avfoundation"` on macOS);
            `(image, t)` frames (an iterable or async iterable; numpy HxWx3 uint8, BGR unless
            `rgb`); or aiortc tracks.
        purpose: what the participants were told and agreed to (shown to viewers).
        audio: also publish the file's or device's audio (voices, prosody).
        format: ffmpeg input format of a device ("v4l2", "avfoundation", "dshow").
        options: ffmpeg input options (`{"video_size": "640x480"}`).
        loop: replay the file until you stop iterating.
        rgb: the frames are RGB.
        ice_servers: STUN/TURN servers (`[{"urls": "stun:stun.example.org"}]`); none for a
            server on the same machine or network.

    Raises:
        MediaError: the source cannot be opened.
        LiveError: the server cannot be reached, refused or dropped the connection.
    """
    async with connect(
        url,
        source,
        purpose=purpose,
        audio=audio,
        format=format,
        options=options,
        loop=loop,
        rgb=rgb,
        ice_servers=ice_servers,
    ) as pub:
        async for event in pub.events():
            yield event
