"""`emotion-stream serve`: web pages, WebRTC signalling, events and metrics in one asyncio process.

Routes (one port):
  GET /, /index.html, /viewer.html, /*.js, /*.css   the overlay pages from web/
  GET /metrics                                       Prometheus metrics
  GET /healthz                                       "ok"
  GET /schema/events.json                            the event JSON schema
  GET /report/ID.{json,csv,html}?token=TOKEN          a session's report so far (download)
  WS  /ws                                 publisher: consent, offer/answer, commands, events
  WS  /ws/view?session=ID&token=TOKEN     viewer: events of one session, read-only (in a cluster:
                                          a session of any worker, relayed through Redis)
  WS  /ws/wall?token=OPERATOR_TOKEN       supervisor wall: one line per live call (cluster.py)

  POST /whip, DELETE /whip/ID              WHIP ingest (RFC 9725; whip.py)

Every session opens and closes through the process's `SessionHost` (host.py), whatever its
source; this module is the HTTP and WebSocket side of it. Only GET and HEAD are answered (405
otherwise) except on /whip. Requests whose Host is neither
an IP literal, `localhost` nor listed in `live.allowed_hosts` get 403 (DNS rebinding), and so do
WebSocket handshakes from a browser page of another origin than the server's own unless listed in
`live.allowed_origins`. Pages carry a Content-Security-Policy whose frame-ancestors are the
server itself and `live.allowed_origins`.

WebSocket close codes: 1009 message too big, 4400 too many invalid messages, 4401 missing or
wrong session/token, 4408 no offer, or no media connection, within `live.hello_timeout_s` (of
the connection, the offer or the media connection's end), 4409 too slow to receive events,
4429 too many messages per second, 4503 too many sessions or viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import mimetypes
import signal
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from stream.analysis.stages import Stages, StageSource
from stream.core.config import Config
from stream.core.notices import EXPRESSIONS_NOT_FEELINGS
from stream.live import reports
from stream.live.cluster import Cluster, ws_url
from stream.live.events import NO_SESSION, Answer, Error, Redirect, envelope, schema
from stream.live.host import Refused, SessionHost
from stream.live.metrics import LiveCollector, render_metrics
from stream.live.protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_FULL,
    CLOSE_RATE,
    CLOSE_TIMEOUT,
    CLOSE_TOO_SLOW,
    MAX_INVALID,
    BadMessage,
    Bye,
    Hello,
    Offer,
    RateLimit,
    check_offer,
    close_draining,
    host_allowed,
    origin_allowed,
    parse_command,
)
from stream.live.session import LiveSession, Subscriber
from stream.live.tls import TlsSetup, open_urls
from stream.live.tls import setup as tls_setup
from stream.live.webrtc import answer_offer
from stream.live.whip import WhipEndpoint, connection_class
from stream.models.runtime import SessionFactory

log = logging.getLogger(__name__)

#: The pages load only their own scripts, styles and images; media come from the camera.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)

#: The longest path component most file systems allow (longer ones cannot name a page).
_NAME_MAX = 255


class LiveServer:
    """The HTTP and WebSocket side of a `SessionHost`: pages, the publisher socket, viewers,
    the wall, reports, metrics and WHIP.

    Args:
        config: the configuration.
        factory: shares ONNX Runtime sessions when the models are loaded here.
        stages: loaded stages to use instead of loading the models (tests pass fakes).
        pace: cap analysis at `live.max_fps` in real time (see `LiveSession`).
    """

    def __init__(
        self,
        config: Config,
        factory: SessionFactory | None = None,
        stages: StageSource | None = None,
        pace: bool = True,
    ) -> None:
        self.config = config
        # Load and verify every model now, so the first peer does not wait and errors show early.
        self.host = SessionHost(config, stages or Stages(config, factory), pace=pace)
        self.collector = LiveCollector(self)
        self.web = config.live.web_path()
        self.server: Server | None = None
        self.connections_total = 0
        self.whip = WhipEndpoint(self.host)  # POST/DELETE /whip, answered before websockets
        self.tls: TlsSetup | None = None  # HTTPS (tls.py), made by start() from live.tls_*

    @property
    def sessions(self) -> dict[str, LiveSession]:
        """The host's sessions by id."""
        return self.host.sessions

    @property
    def cluster(self) -> Cluster:
        return self.host.cluster

    @property
    def stages(self) -> StageSource:
        return self.host.stages

    @property
    def save_reports(self) -> Path | None:
        return self.host.save_reports

    @save_reports.setter
    def save_reports(self, folder: Path | None) -> None:
        self.host.save_reports = folder

    # -- HTTP ------------------------------------------------------------------------------
    def _response(
        self,
        status: HTTPStatus,
        body: bytes,
        ctype: str = "text/plain",
        head: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """A response with the security headers; `head` keeps the length but drops the body."""
        ancestors = " ".join(("'self'", *self.config.live.allowed_origins))
        headers = Headers(
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer"),  # viewer links carry their token
                ("Content-Security-Policy", _CSP + f"; frame-ancestors {ancestors}"),
                ("Connection", "close"),
                *extra,
            ]
        )
        return Response(status.value, status.phrase, headers, b"" if head else body)

    def _static(self, path: str) -> Path | None:
        """The file under the web folder that a URL path names, or None."""
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        parts = rel.split("/")
        if "\x00" in rel or any(len(p.encode("utf-8", "surrogatepass")) > _NAME_MAX for p in parts):
            return None
        try:
            target = (self.web / rel).resolve()
            if target.is_relative_to(self.web) and target.is_file():
                return target
        except (OSError, ValueError):  # names the file system refuses
            pass
        return None

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests; let allowed WebSocket upgrades on /ws through."""
        live = self.config.live
        head = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            msg = b"method not allowed\n"
            return self._response(
                HTTPStatus.METHOD_NOT_ALLOWED, msg, extra=(("Allow", "GET, HEAD"),)
            )
        host = request.headers.get("Host")
        if not host_allowed(host, live.allowed_hosts):
            msg = b"host not allowed (see live.allowed_hosts)\n"
            return self._response(HTTPStatus.FORBIDDEN, msg, head=head)
        path = urlsplit(request.path).path
        if path in ("/ws", "/ws/view", "/ws/wall"):
            if not origin_allowed(request.headers.get("Origin"), host, live.allowed_origins):
                msg = b"origin not allowed (see live.allowed_origins)\n"
                return self._response(HTTPStatus.FORBIDDEN, msg, head=head)
            return None
        if path == "/metrics":
            return self._response(HTTPStatus.OK, render_metrics(self.collector), head=head)
        if path == "/healthz":
            return self._response(HTTPStatus.OK, b"ok\n", head=head)
        if path == "/schema/events.json":
            body = json.dumps(schema(), indent=1).encode()
            return self._response(HTTPStatus.OK, body, "application/schema+json", head)
        report = reports.http_response(self.sessions, request.path, head)
        if report is not None:  # GET /report/SESSION.{json,csv,html}?token=VIEWER_TOKEN
            return report
        target = self._static(path)
        if target is None:
            return self._response(HTTPStatus.NOT_FOUND, b"not found\n", head=head)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        body = target.read_bytes()
        if target.suffix == ".html":  # the notice text is defined once, in stream/core/notices
            body = body.replace(b"<!--NOTICE-->", html.escape(EXPRESSIONS_NOT_FEELINGS).encode())
        return self._response(HTTPStatus.OK, body, ctype, head)

    # -- WebSocket -------------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        assert ws.request is not None  # set once the handshake is done
        url = urlsplit(ws.request.path)
        if url.path == "/ws/view":
            await self._viewer(ws, parse_qs(url.query))
        elif url.path == "/ws/wall":
            await self.cluster.wall(ws, parse_qs(url.query))
        else:
            await self._publisher(ws)

    async def _viewer(self, ws: ServerConnection, query: dict[str, list[str]]) -> None:
        sid = (query.get("session") or [""])[0]
        token = (query.get("token") or [""])[0]
        await self.host.view(ws, sid, token)

    @staticmethod
    async def _refuse(ws: ServerConnection, refused: Refused) -> None:
        """A full worker: send the publisher to the worker with room, if any, and close (4503)."""
        if refused.room is None:
            await close_draining(ws, CLOSE_FULL, "too many sessions; try again later")
            return
        url = refused.room
        event = Redirect(f"this worker is full; continue at {url}", url, ws_url(url))
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(envelope(event, NO_SESSION, 0, time.time())))
        await close_draining(ws, CLOSE_FULL, "full; redirected")

    async def _publisher(self, ws: ServerConnection) -> None:
        session: LiveSession | None = None
        sub: Subscriber | None = None
        invalid = 0
        live = self.config.live
        limit = RateLimit(live.max_messages_per_s)

        offered_at = 0.0  # when the last offer was answered (loop time)

        async def expire() -> None:
            """Close a connection that holds no media (squatting, 4408): no offer within
            `hello_timeout_s`, or no media connection within `hello_timeout_s` of the offer
            (like WHIP's sessions) or of the media connection's end."""
            loop = asyncio.get_running_loop()
            wait = live.hello_timeout_s
            while True:
                await asyncio.sleep(wait)
                source = session.source if session is not None else None
                if source is None:
                    why = f"no offer within {live.hello_timeout_s:g} s"
                    break
                done = getattr(source, "done", None)
                if getattr(source, "state", "connected") == "connected":
                    if done is None:
                        return
                    await done.wait()  # media flow; the page may offer again after it ends
                    wait = live.hello_timeout_s
                    continue
                wait = offered_at + live.hello_timeout_s - loop.time()
                if wait <= 0 or (done is not None and done.is_set()):
                    why = f"no media connection within {live.hello_timeout_s:g} s"
                    break
            log.info("publisher closed: %s", why)
            await ws.close(CLOSE_TIMEOUT, why)

        watchdog = asyncio.get_running_loop().create_task(expire())

        async def error(code: str, message: str) -> None:
            if session is not None:
                session.publish(Error(code, message))
            else:
                payload = envelope(Error(code, message), NO_SESSION, 0, time.time())
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps(payload))

        try:
            async for raw in ws:
                if not limit.allow():
                    await close_draining(ws, CLOSE_RATE, "too many messages per second")
                    break
                try:
                    cmd = parse_command(raw)
                except BadMessage as exc:
                    invalid += 1
                    await error(exc.code, str(exc))
                    if invalid >= MAX_INVALID:
                        await close_draining(ws, CLOSE_BAD_REQUEST, "too many invalid messages")
                        break
                    continue
                if isinstance(cmd, Hello):
                    if session is not None:
                        await error("bad_message", "hello was already sent")
                        continue
                    try:
                        session = await self.host.open(cmd.purpose, "page")
                    except Refused as refused:
                        await self._refuse(ws, refused)  # 4503, with a redirect in a cluster
                        break
                    sub = Subscriber(
                        ws.send,
                        "publisher",
                        on_overflow=lambda: ws.close(CLOSE_TOO_SLOW, "too slow to receive events"),
                    )
                    session.subscribe(sub)
                    continue
                if session is None:
                    await error("consent_required", "send hello with consent: true first")
                    continue
                match cmd:
                    case Offer(sdp=sdp):
                        try:
                            check_offer(sdp, live.max_video_tracks, live.max_audio_tracks)
                            peer = await answer_offer(session, self.config, sdp)
                        except BadMessage as exc:
                            await error(exc.code, str(exc))
                            continue
                        offered_at = asyncio.get_running_loop().time()
                        session.publish(Answer(peer.answer))
                    case Bye():
                        break
                    case _:
                        await session.command(cmd)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            if session is not None:
                await self.host.close(session, "publisher left")
            if sub is not None:
                await sub.flush()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> Server:
        live = self.config.live
        if live.tls_cert or live.tls_key or live.tls_self_signed:
            self.tls = tls_setup(live.tls_cert, live.tls_key, live.tls_self_signed, live.host)
        self.server = await serve(
            self.handler,
            live.host,
            live.port,
            process_request=self.process_request,
            max_size=live.max_message_bytes,
            max_queue=16,
            server_header="emotion-stream",
            ssl=self.tls.context if self.tls else None,
            create_connection=connection_class(self.whip),
        )
        await self.host.start(self.port)  # joins the Redis cluster, if configured
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def shutdown(self) -> list[dict[str, Any]]:
        """Close every session (peers closed, summaries sent) and stop serving; returns the
        summaries of the sessions it closed."""
        await self.whip.close()  # WHIP sessions end (and save reports) through the host
        summaries = await self.host.shutdown()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        return summaries


async def run_server(
    config: Config, save_dir: Path | None = None, reports_dir: Path | None = None
) -> int:
    """Serve until Ctrl-C / SIGTERM, then shut down cleanly.

    Args:
        save_dir: write each session's summary event as JSON here at shutdown.
        reports_dir: write each session's JSON, CSV and HTML reports here when it ends.

    Returns:
        The signal that stopped it (SIGINT: the CLI exits 130, SIGTERM: 0).
    """
    server = LiveServer(config)
    server.save_reports = reports_dir
    await server.start()
    live = config.live
    urls = open_urls(live.host, server.port, server.tls is not None)
    print(f"emotion-stream: serving on {', '.join(urls)}  (Ctrl-C to stop)")
    if server.tls is not None and server.tls.self_signed:
        print(
            "emotion-stream: self-signed certificate, SHA-256 fingerprint (compare it in the "
            f"browser's warning before accepting):\n  {server.tls.fingerprint}"
        )
    if config.whip.tokens:
        print(f"emotion-stream: WHIP ingest at {urls[-1].rstrip('/')}/whip (bearer token)")
    stop: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def stopped(sig: int) -> None:
        if not stop.done():
            stop.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stopped, int(sig))
    received = await stop
    print("emotion-stream: shutting down")
    summaries = await server.shutdown()
    if save_dir is not None and summaries:
        save_dir.mkdir(parents=True, exist_ok=True)
        for s in summaries:
            path = save_dir / f"session-{s['session']}.json"
            path.write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
            print(f"emotion-stream: wrote {path}")
    return received
