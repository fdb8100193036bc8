"""WHIP ingest (RFC 9725): publish into a live session with one HTTP POST, e.g. from OBS Studio.

Routes (on the same port as the pages, HTTP or HTTPS):
  OPTIONS /whip            204 with Accept-Post: application/sdp (and CORS for allowed origins)
  POST    /whip            SDP offer + `Authorization: Bearer TOKEN` -> 201 Created, the SDP
                           answer, `Location: /whip/ID`; `X-Viewer` names the viewer page
  DELETE  /whip/ID         same token: ends the session (200)
  PATCH   /whip/ID         405: no trickle ICE or ICE restarts (aiortc takes complete offers)

A WHIP session is a normal live session: viewers at /viewer.html?session=ID&token=..., report
downloads, `--save-reports`, the cluster's directory and wall, limits (`cluster.capacity`, track
counts): it opens and closes through the session host (host.py). A full worker answers 503 with
`Retry-After` and, when a worker of the cluster has room, `X-Worker-With-Room: URL/whip` (WHIP
clients do not follow redirects to another worker by themselves). It has no publisher
WebSocket, so the purpose and consent come from configuration: each token in `[whip] tokens`
carries the purpose its operator declares. It ends on DELETE, when the media connection fails
or closes, when no media connection is made within `live.hello_timeout_s`, or at shutdown.

websockets' HTTP parser accepts only GET, so `HttpConnection` (the server's connection class)
reads each connection's request head first: requests for /whip are parsed and answered here;
heads over 16 KB or 128 lines get 431, malformed ones 400, plain requests with another method
than GET/HEAD 405 and with a body 400 (websockets would close those without a response). A
WebSocket upgrade goes to websockets unchanged; a plain request goes to it alone (anything
pipelined after it is ignored: every response closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import Request
from websockets.streams import StreamReader

from stream.live.host import Refused, SessionHost
from stream.live.protocol import (
    BadMessage,
    check_offer,
    host_allowed,
    origin_allowed,
    token_matches,
)
from stream.live.session import LiveSession
from stream.live.webrtc import PeerSource, answer_offer

log = logging.getLogger(__name__)

PATH = "/whip"
#: On a 503 from a full worker: the WHIP endpoint of a worker of the cluster with room.
ROOM_HEADER = "X-Worker-With-Room"
#: The largest request head and SDP body taken (a browser offer is 3-8 KB).
MAX_HEAD = 16384
MAX_BODY = 65536
#: The most header lines a request may have (websockets' limit too).
MAX_HEADERS = 128


@dataclass
class HttpRequest:
    """One parsed HTTP/1.1 request (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class HttpReply:
    status: HTTPStatus
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self) -> bytes:
        """The response on the wire; every connection closes after one exchange."""
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}"]
        names = {k.lower() for k, _ in self.headers}
        heads = list(self.headers)
        if "content-type" not in names and self.body:
            heads.append(("Content-Type", "text/plain; charset=utf-8"))
        heads += [
            ("Content-Length", str(len(self.body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Server", "emotion-stream"),
            ("Connection", "close"),
        ]
        lines += [f"{k}: {v}" for k, v in heads]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def text(status: HTTPStatus, message: str, *headers: tuple[str, str]) -> HttpReply:
    return HttpReply(status, (message + "\n").encode(), list(headers))


def is_whip_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def parse_head(head: bytes) -> HttpRequest | None:
    """The request line and headers of a request head (None if malformed)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return HttpRequest(method, target, headers)


def check_head(head: bytes) -> tuple[HttpRequest | None, HttpReply | None]:
    """A complete request head (without its blank line) parsed, or the reply that refuses it:
    431 over `MAX_HEAD` bytes or `MAX_HEADERS` header lines, 400 when malformed."""
    if len(head) > MAX_HEAD or head.count(b"\r\n") > MAX_HEADERS:
        return None, text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
    request = parse_head(head)
    if request is None:
        return None, text(HTTPStatus.BAD_REQUEST, "malformed request")
    return request, None


def _has_body(request: HttpRequest) -> bool:
    length = request.headers.get("content-length", "0").replace(",", " ").split()
    return "transfer-encoding" in request.headers or any(n != "0" for n in length)


def _websockets_refusal(head: bytes) -> HttpReply | None:
    """The reply for a request head that websockets' parser would refuse (it closes such
    connections without a response), or None when it takes it."""
    reader = StreamReader()
    reader.feed_data(head)
    reader.feed_eof()
    try:
        next(Request.parse(reader.read_line))
    except StopIteration:
        return None
    except (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders):
        return text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
    except Exception:  # ValueError, UnicodeDecodeError, NotImplementedError, EOFError
        pass
    return text(HTTPStatus.BAD_REQUEST, "malformed request")


class HttpConnection(ServerConnection):
    """A websockets connection that answers WHIP requests itself (see the module docstring).

    The first bytes are held until the request line is complete; then the connection becomes
    either an ordinary websockets connection (fed those bytes) or one WHIP exchange.
    """

    endpoint: WhipEndpoint | None = None  # set on a subclass by `connection_class`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buf = b""
        self._mode = ""  # "" undecided, "ws", "first" (one plain request), "http", "done"

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            super().data_received(data)
            return
        if self._mode in ("done", "first"):
            return  # answered, or one plain request handed on: pipelined requests are ignored
        self._buf += data
        if self._mode == "http":
            self._http()
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._reply(text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large"))
            return
        request, refusal = check_head(self._buf[:end])
        if refusal is not None:
            self._reply(refusal)
            return
        assert request is not None
        if self.endpoint is not None and is_whip_path(urlsplit(request.path).path):
            self._mode = "http"
            self._http()
            return
        upgrade = "websocket" in request.headers.get("upgrade", "").lower()
        if not upgrade and request.method not in ("GET", "HEAD"):
            self._reply(
                text(HTTPStatus.METHOD_NOT_ALLOWED, "allowed: GET, HEAD", ("Allow", "GET, HEAD"))
            )
            return
        if not upgrade and _has_body(request):
            self._reply(text(HTTPStatus.BAD_REQUEST, "a GET or HEAD request has no body"))
            return
        refusal = _websockets_refusal(self._buf[: end + 4])
        if refusal is not None:
            self._reply(refusal)
            return
        if upgrade:  # a WebSocket: websockets takes the connection from here
            self._mode = "ws"
            buf, self._buf = self._buf, b""
        else:  # one plain request: websockets answers it and closes
            self._mode = "first"
            buf, self._buf = self._buf[: end + 4], b""
        super().data_received(buf)

    def _http(self) -> None:
        """Parse the request once complete, then answer it in a task."""
        end = self._buf.find(b"\r\n\r\n")
        request, refusal = check_head(self._buf[: max(end, 0)])
        if refusal is not None or request is None:
            self._reply(refusal or text(HTTPStatus.BAD_REQUEST, "malformed request"))
            return
        if "transfer-encoding" in request.headers:
            self._reply(text(HTTPStatus.LENGTH_REQUIRED, "send the SDP with a Content-Length"))
            return
        given = request.headers.get("content-length", "0")
        if not given.isascii() or not given.isdigit():  # "-1", "abc", "1, 2"
            self._reply(text(HTTPStatus.BAD_REQUEST, "Content-Length must be a byte count"))
            return
        length = int(given)
        if length > MAX_BODY:
            self._reply(text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes"))
            return
        if len(self._buf) < end + 4 + length:
            return  # more body to come
        request.body = self._buf[end + 4 : end + 4 + length]
        self._mode, self._buf = "done", b""
        assert self.endpoint is not None
        endpoint = self.endpoint

        async def answer() -> None:
            try:
                reply = await endpoint.handle(request)
            except Exception:
                log.exception("WHIP request failed")
                reply = text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            self._reply(reply)

        endpoint.spawn(answer())

    def _reply(self, reply: HttpReply) -> None:
        self._mode = "done"
        if not self.transport.is_closing():
            self.transport.write(reply.encode())
            self.transport.close()  # after the buffered response is written


def connection_class(endpoint: WhipEndpoint) -> type[HttpConnection]:
    """The connection class for `serve(create_connection=...)` routing /whip to `endpoint`."""
    return type("WhipHttpConnection", (HttpConnection,), {"endpoint": endpoint})


@dataclass
class _Ingest:
    session: LiveSession
    token: str
    peer: PeerSource
    watchdog: asyncio.Task[Any] | None = None


class WhipEndpoint:
    """The WHIP resources of one `SessionHost` (sessions open and close through the host)."""

    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.config = host.config
        self.ingests: dict[str, _Ingest] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cors(self, req: HttpRequest) -> list[tuple[str, str]] | None:
        """CORS headers for a browser request from an allowed origin ([] without Origin);
        None when the origin is not allowed."""
        origin = req.headers.get("origin")
        if origin is None:
            return []
        live = self.config.live
        if not origin_allowed(origin, req.headers.get("host"), live.allowed_origins):
            return None
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
            ("Access-Control-Expose-Headers", "Location, Link, X-Viewer, Accept-Post"),
        ]

    async def handle(self, req: HttpRequest) -> HttpReply:
        """Answer one WHIP request."""
        live = self.config.live
        if not host_allowed(req.headers.get("host"), live.allowed_hosts):
            return text(HTTPStatus.FORBIDDEN, "host not allowed (see live.allowed_hosts)")
        cors = self._cors(req)
        if cors is None:
            return text(HTTPStatus.FORBIDDEN, "origin not allowed (see live.allowed_origins)")
        path = urlsplit(req.path).path
        resource = path != PATH
        allow = "DELETE, PATCH, OPTIONS" if resource else "POST, OPTIONS"
        if not self.config.whip.tokens:
            return text(
                HTTPStatus.NOT_FOUND,
                "WHIP ingest is off: list tokens in [whip] tokens or start serve with --whip",
                *cors,
            )
        if req.method == "OPTIONS":
            reply = HttpReply(HTTPStatus.NO_CONTENT, headers=[("Allow", allow)])
            if not resource:
                reply.headers.append(("Accept-Post", "application/sdp"))
            if "access-control-request-method" in req.headers:
                reply.headers += [
                    ("Access-Control-Allow-Methods", allow),
                    ("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match"),
                    ("Access-Control-Max-Age", "600"),
                ]
            reply.headers += cors
            return reply
        if req.method == "POST" and not resource:
            reply = await self._post(req)
        elif req.method == "DELETE" and resource:
            reply = await self._delete(req, path[len(PATH) + 1 :])
        else:
            reply = text(HTTPStatus.METHOD_NOT_ALLOWED, f"allowed: {allow}", ("Allow", allow))
        reply.headers += cors
        return reply

    def _token(self, req: HttpRequest) -> tuple[str, str] | None:
        """The (token, purpose) the request's bearer token names, or None."""
        scheme, _, given = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        found = None
        for t in self.config.whip.tokens:  # no early exit: same time for every token
            if token_matches(given.strip(), t.token):
                found = (t.token, t.purpose)
        return found

    @staticmethod
    def _unauthorized() -> HttpReply:
        return text(
            HTTPStatus.UNAUTHORIZED,
            "missing or wrong bearer token",
            ("WWW-Authenticate", 'Bearer realm="emotion-stream WHIP"'),
        )

    async def _post(self, req: HttpRequest) -> HttpReply:
        live = self.config.live
        auth = self._token(req)
        if auth is None:
            return self._unauthorized()
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            return text(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the offer must be application/sdp")
        try:
            sdp = req.body.decode("utf-8")
            check_offer(sdp, live.max_video_tracks, live.max_audio_tracks)
        except UnicodeDecodeError:
            return text(HTTPStatus.BAD_REQUEST, "the offer is not UTF-8 text")
        except BadMessage as exc:
            return text(HTTPStatus.BAD_REQUEST, str(exc))
        token, purpose = auth
        try:
            session = await self.host.open(purpose, "whip")
        except Refused as refused:  # WHIP clients do not follow: name the worker with room
            room = [(ROOM_HEADER, refused.room.rstrip("/") + PATH)] if refused.room else []
            return text(HTTPStatus.SERVICE_UNAVAILABLE, str(refused), ("Retry-After", "10"), *room)
        try:
            peer = await answer_offer(session, self.config, sdp)
        except BadMessage as exc:
            await self.host.close(session, "offer refused")
            return text(HTTPStatus.BAD_REQUEST, str(exc))
        ingest = _Ingest(session, token, peer)
        self.ingests[session.id] = ingest
        ingest.watchdog = asyncio.ensure_future(self._watch(session.id, peer))
        headers = [
            ("Content-Type", "application/sdp"),
            ("Location", f"{PATH}/{session.id}"),
            ("X-Viewer", f"/viewer.html?session={session.id}&token={session.viewer_token}"),
        ]
        for s in live.ice_servers:  # RFC 9725 section 4.6: ICE servers as Link headers
            link = f'<{s.urls}>; rel="ice-server"'
            if s.username:
                link += f'; username="{s.username}"; credential="{s.credential}"'
            headers.append(("Link", link))
        return HttpReply(HTTPStatus.CREATED, peer.answer.encode(), headers)

    async def _watch(self, sid: str, peer: PeerSource) -> None:
        """End the session when its media connection is not up within `live.hello_timeout_s`,
        or once it fails or closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(peer.done.wait(), self.config.live.hello_timeout_s)
        if not peer.done.is_set():
            if peer.state != "connected":
                await self.end(sid, "no media connection")
                return
            await peer.done.wait()
        await self.end(sid, f"media connection {peer.state}")

    async def _delete(self, req: HttpRequest, sid: str) -> HttpReply:
        auth = self._token(req)
        if auth is None:
            return self._unauthorized()
        ingest = self.ingests.get(sid)
        if ingest is None or not token_matches(auth[0], ingest.token):
            return text(HTTPStatus.NOT_FOUND, "no such WHIP session")
        await self.end(sid, "publisher ended the WHIP session")
        return text(HTTPStatus.OK, "session ended")

    async def end(self, sid: str, reason: str) -> None:
        """Close a WHIP session through the host (summary to its viewers, reports saved)."""
        ingest = self.ingests.pop(sid, None)
        if ingest is None:
            return
        if ingest.watchdog is not None and ingest.watchdog is not asyncio.current_task():
            ingest.watchdog.cancel()
        await self.host.close(ingest.session, reason)

    async def close(self) -> None:
        """End every WHIP session (server shutdown)."""
        for sid in list(self.ingests):
            await self.end(sid, "server shutting down")
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
