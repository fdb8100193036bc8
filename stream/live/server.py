"""`emotion-stream serve`: web pages, WebRTC signalling, events and metrics in one asyncio process.

Routes (one port):
  GET /, /index.html, /viewer.html, /*.js, /*.css   the overlay pages from web/
  GET /metrics                                       Prometheus metrics
  GET /healthz                                       "ok"
  GET /schema/events.json                            the event JSON schema
  WS  /ws                                 publisher: consent, offer/answer, commands, events
  WS  /ws/view?session=ID&token=TOKEN     viewer: events of one session, read-only

WebSocket close codes: 1009 message too big, 4400 too many invalid messages, 4401 missing or
wrong session/token, 4429 too many messages per second, 4503 too many sessions or viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.live.events import NO_SESSION, Error, envelope, schema
from stream.live.metrics import LiveCollector, render_metrics
from stream.live.protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_FULL,
    CLOSE_RATE,
    CLOSE_UNAUTHORIZED,
    MAX_INVALID,
    BadMessage,
    RateLimit,
    close_draining,
    parse_message,
)
from stream.live.session import LiveSession, Subscriber
from stream.live.webrtc import answer_offer
from stream.models.runtime import SessionFactory

log = logging.getLogger(__name__)


class LiveServer:
    """Owns the loaded models, the inference executors and all live sessions."""

    def __init__(self, config: Config, factory: SessionFactory | None = None) -> None:
        self.config = config
        # Load and verify every model now, so the first peer does not wait and errors show early.
        self.stages = Stages(config, factory)
        self.executor = ThreadPoolExecutor(config.live.workers, thread_name_prefix="infer")
        # Voice runs beside vision so that audio never waits behind video frames.
        self.audio_executor = ThreadPoolExecutor(1, thread_name_prefix="voice")
        self.sessions: dict[str, LiveSession] = {}
        self.collector = LiveCollector(self)
        self.web = config.live.web_path()
        self.server: Server | None = None
        self.connections_total = 0

    # -- HTTP ------------------------------------------------------------------------------
    def _response(self, status: HTTPStatus, body: bytes, ctype: str) -> Response:
        headers = Headers(
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests; let WebSocket upgrades on /ws through."""
        path = urlsplit(request.path).path
        if path in ("/ws", "/ws/view"):
            return None
        if path == "/metrics":
            return self._response(HTTPStatus.OK, render_metrics(self.collector), "text/plain")
        if path == "/healthz":
            return self._response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/schema/events.json":
            body = json.dumps(schema(), indent=1).encode()
            return self._response(HTTPStatus.OK, body, "application/schema+json")
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        target = (self.web / rel).resolve()
        if not target.is_relative_to(self.web) or not target.is_file():
            return self._response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            ctype = "text/javascript"
        return self._response(HTTPStatus.OK, target.read_bytes(), ctype)

    # -- WebSocket -------------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        assert ws.request is not None  # set once the handshake is done
        url = urlsplit(ws.request.path)
        if url.path == "/ws/view":
            await self._viewer(ws, parse_qs(url.query))
        else:
            await self._publisher(ws)

    async def _viewer(self, ws: ServerConnection, query: dict[str, list[str]]) -> None:
        sid = (query.get("session") or [""])[0]
        token = (query.get("token") or [""])[0]
        session = self.sessions.get(sid)
        if session is None or not hmac.compare_digest(token, session.viewer_token):
            await close_draining(ws, CLOSE_UNAUTHORIZED, "unknown session or wrong token")
            return
        viewers = sum(1 for s in session.subscribers if s.role == "viewer")
        if viewers >= self.config.live.max_viewers:
            await close_draining(ws, CLOSE_FULL, "too many viewers for this session")
            return
        sub = Subscriber(ws.send, "viewer", on_done=lambda: ws.close(1000, "session ended"))
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

    async def _publisher(self, ws: ServerConnection) -> None:
        session: LiveSession | None = None
        sub: Subscriber | None = None
        invalid = 0
        limit = RateLimit(self.config.live.max_messages_per_s)

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
                    msg = parse_message(raw)
                except BadMessage as exc:
                    invalid += 1
                    await error(exc.code, str(exc))
                    if invalid >= MAX_INVALID:
                        await close_draining(ws, CLOSE_BAD_REQUEST, "too many invalid messages")
                        break
                    continue
                t = msg["type"]
                if t == "hello":
                    if session is not None:
                        await error("bad_message", "hello was already sent")
                        continue
                    if len(self.sessions) >= self.config.live.max_sessions:
                        await close_draining(ws, CLOSE_FULL, "too many sessions; try again later")
                        break
                    session = LiveSession(
                        self.config,
                        self.stages,
                        self.executor,
                        msg.get("purpose", ""),
                        self.audio_executor,
                    )
                    self.sessions[session.id] = session
                    sub = Subscriber(ws.send, "publisher")
                    session.subscribe(sub)
                    continue
                if session is None:
                    await error("consent_required", "send hello with consent: true first")
                    continue
                if t == "offer":
                    await answer_offer(session, self.config, msg["sdp"], error)
                elif t == "bye":
                    break
                else:
                    await session.command(msg)
        except ConnectionClosed:
            pass
        finally:
            if session is not None:
                self.sessions.pop(session.id, None)
                await session.close("publisher left")
            if sub is not None:
                await sub.flush()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> Server:
        live = self.config.live
        self.server = await serve(
            self.handler,
            live.host,
            live.port,
            process_request=self.process_request,
            max_size=live.max_message_bytes,
            max_queue=16,
            server_header="emotion-stream",
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def shutdown(self) -> list[dict[str, Any]]:
        """Close every session (peers closed, summaries sent) and stop serving."""
        summaries = []
        for session in list(self.sessions.values()):
            summary = await session.close("server shutting down")
            if summary is not None:
                summaries.append(summary)
        self.sessions.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.audio_executor.shutdown(wait=False, cancel_futures=True)
        return summaries


async def run_server(config: Config, save_dir: Path | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM, then shut down cleanly."""
    server = LiveServer(config)
    await server.start()
    live = config.live
    print(f"emotion-stream: serving on http://{live.host}:{server.port}/  (Ctrl-C to stop)")
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    await stop
    print("emotion-stream: shutting down")
    summaries = await server.shutdown()
    if save_dir is not None and summaries:
        save_dir.mkdir(parents=True, exist_ok=True)
        for s in summaries:
            path = save_dir / f"session-{s['session']}.json"
            path.write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
            print(f"emotion-stream: wrote {path}")
