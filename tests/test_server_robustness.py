"""The server under bad input: garbage, oversized or too many messages, bad SDP, vanishing peers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import html
import json
import resource
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from stream.analysis.fakes import FakeStages
from stream.core.config import Config, load_config
from stream.core.notices import EXPRESSIONS_NOT_FEELINGS
from stream.live.protocol import parse_command
from stream.live.server import LiveServer
from stream.models.runtime import SessionFactory

from .conftest import ROOT, VIDEO
from .live_client import connect_publisher, player_tracks


@pytest.fixture(scope="module")
def fake_config() -> Config:
    """The default configuration for a server on fake stages (no model files needed)."""
    return load_config(ROOT / "configs" / "default.toml", env={})


def with_server(
    config: Config,
    factory: SessionFactory | None,
    body: Callable[[LiveServer, str], Awaitable[Any]],
    **live: Any,
) -> Any:
    """Run `body(server, "127.0.0.1:PORT")` against a started server: the real models over
    `factory`, or the fake stages (stream/analysis/fakes.py) when `factory` is None."""

    async def main() -> Any:
        cfg = config.replace("live", port=0, **live)
        stages = FakeStages(cfg) if factory is None else None
        server = LiveServer(cfg, factory, stages=stages)
        await server.start()
        try:
            return await body(server, f"127.0.0.1:{server.port}")
        finally:
            await server.shutdown()

    return asyncio.run(main())


async def close_code(ws: Any) -> int:
    try:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        (b"\x00\x01", "bad_message"),
        ("[1, 2]", "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "hello"}', "consent_required"),
        ('{"type": "offer", "sdp": "garbage"}', "invalid_sdp"),
        ('{"type": "rename", "id": 0, "name": "x"}', "bad_message"),
        ('{"type": "rename", "id": 1, "name": "a\\u0000b"}', "bad_message"),
        ('{"type": "rename", "id": true, "name": "x"}', "bad_message"),
        ('{"type": "exclude", "id": 3, "excluded": "yes"}', "bad_message"),
    ],
)
def test_parse_command_rejects(raw: str | bytes, code: str) -> None:
    from stream.live.protocol import BadMessage

    with pytest.raises(BadMessage) as err:
        parse_command(raw)
    assert err.value.code == code


def test_garbage_gets_errors_then_the_socket_is_closed(fake_config: Config) -> None:
    async def body(server: LiveServer, addr: str) -> tuple[list[dict[str, Any]], int]:
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            replies = []
            for raw in ("{nope", '{"type": "offer", "sdp": "v=0"}', '{"type": 5}', "[]"):
                await ws.send(raw)
                replies.append(json.loads(await ws.recv()))
            await ws.send('{"type": "dance"}')  # 4th invalid message
            replies.append(json.loads(await ws.recv()))
            await ws.send("}{")  # 5th: the server gives up on this client
            code = await close_code(ws)
        return replies, code

    replies, code = with_server(fake_config, None, body)
    codes = [r["code"] for r in replies]
    assert codes == ["bad_json", "consent_required", "bad_message", "bad_message", "unknown_type"]
    assert code == 4400


def test_oversized_message_closes_with_1009(fake_config: Config) -> None:
    async def body(server: LiveServer, addr: str) -> int:
        async with websockets.connect(f"ws://{addr}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True, "purpose": "x" * 100_000}))
            return await close_code(ws)

    assert with_server(fake_config, None, body) == 1009


def test_message_flood_closes_with_4429(fake_config: Config) -> None:
    async def body(server: LiveServer, addr: str) -> int:
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            for _ in range(200):
                try:
                    await ws.send(json.dumps({"type": "rename", "id": 1, "name": "x"}))
                except websockets.ConnectionClosed:
                    break
            return await close_code(ws)

    assert with_server(fake_config, None, body, max_messages_per_s=10.0) == 4429


def test_invalid_sdp_is_reported_and_the_session_survives(fake_config: Config) -> None:
    bad_sdp = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"

    async def body(server: LiveServer, addr: str) -> list[str]:
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            types = [json.loads(await ws.recv())["type"]]
            await ws.send(json.dumps({"type": "offer", "sdp": bad_sdp}))
            ev = json.loads(await ws.recv())
            types.append(f"{ev['type']}:{ev.get('code')}")
            await ws.send(json.dumps({"type": "rename", "id": 1, "name": "still here"}))
            types.append(json.loads(await ws.recv())["type"])
        return types

    assert with_server(fake_config, None, body) == [
        "session.started",
        "error:invalid_sdp",
        "face.renamed",
    ]


def test_too_many_sessions_closes_with_4503(fake_config: Config) -> None:
    async def body(server: LiveServer, addr: str) -> int:
        async with websockets.connect(f"ws://{addr}/ws") as first:
            await first.send(json.dumps({"type": "hello", "consent": True}))
            await first.recv()
            async with websockets.connect(f"ws://{addr}/ws") as second:
                await second.send(json.dumps({"type": "hello", "consent": True}))
                return await close_code(second)

    assert with_server(fake_config, None, body, max_sessions=1) == 4503


def test_http_routes_and_no_path_traversal(fake_config: Config) -> None:
    async def body(server: LiveServer, addr: str) -> dict[str, tuple[int, bytes]]:
        paths = [
            "/",
            "/viewer.html",
            "/overlay.js",
            "/metrics",
            "/healthz",
            "/schema/events.json",
            "/../pyproject.toml",
            "/%2e%2e/pyproject.toml",
            "/nope.html",
        ]
        out = {}
        for p in paths:
            out[p] = await asyncio.to_thread(http_get, f"http://{addr}{p}")
        return out

    r = with_server(fake_config, None, body)
    assert r["/"][0] == 200 and b"consent" in r["/"][1]
    assert r["/viewer.html"][0] == 200 and r["/overlay.js"][0] == 200
    notice = html.escape(EXPRESSIONS_NOT_FEELINGS).encode()  # one text, filled in by the server
    assert notice in r["/"][1] and notice in r["/viewer.html"][1]
    assert b"<!--NOTICE-->" not in r["/"][1]
    assert r["/metrics"][0] == 200 and b"emotion_stream_sessions" in r["/metrics"][1]
    assert r["/healthz"] == (200, b"ok\n")
    assert json.loads(r["/schema/events.json"][1])["title"].startswith("emotion-stream event")
    assert r["/../pyproject.toml"][0] == 404 and r["/%2e%2e/pyproject.toml"][0] == 404
    assert r["/nope.html"][0] == 404


@pytest.mark.integration
def test_peer_vanishing_mid_stream_is_cleaned_up(config: Config, factory: SessionFactory) -> None:
    async def body(server: LiveServer, addr: str) -> tuple[int, int, int, bytes]:
        url = f"ws://{addr}/ws"
        async with connect_publisher(
            url, player_tracks(VIDEO / "pyfeat_single_face.mp4", True)
        ) as pub:
            async with asyncio.timeout(30):
                async for ev in pub.events():
                    if ev["type"] == "frame" and ev["faces"]:
                        break
            during = len(server.sessions)
            # Vanish: drop the media and the socket without a goodbye.
            await pub.pc.close()
            pub.ws.transport.abort()
        async with asyncio.timeout(15):
            while server.sessions:
                await asyncio.sleep(0.05)  # polling server state, not timing the test
        status, page = await asyncio.to_thread(http_get, f"http://{addr}/healthz")
        return during, len(server.sessions), status, page

    during, after, status, page = with_server(config, factory, body)
    assert (during, after, status, page) == (1, 0, 200, b"ok\n")


def _rss_mb() -> float:
    with Path("/proc/self/statm").open() as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


@pytest.mark.integration
def test_100_connect_disconnect_cycles_keep_memory_bounded(
    config: Config, factory: SessionFactory
) -> None:
    async def body(server: LiveServer, addr: str) -> tuple[list[float], int, int]:
        rss = []
        baseline_tasks = len(asyncio.all_tasks())
        clip = VIDEO / "pyfeat_single_face.mp4"
        for i in range(100):
            if i % 25 == 0:
                gc.collect()
                rss.append(_rss_mb())
            if i % 10 == 5:  # every tenth cycle is a full WebRTC peer that streams, then leaves
                async with connect_publisher(f"ws://{addr}/ws", player_tracks(clip)) as pub:
                    async for ev in pub.events():
                        if ev["type"] == "frame":
                            break
                continue
            async with websockets.connect(f"ws://{addr}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "consent": True}))
                await ws.recv()
                if i % 2:
                    await ws.send(json.dumps({"type": "bye"}))
        async with asyncio.timeout(10):
            while server.sessions:
                await asyncio.sleep(0.05)
        gc.collect()
        rss.append(_rss_mb())
        with contextlib.suppress(TimeoutError):  # let the last handlers finish their goodbyes
            async with asyncio.timeout(10):
                while len(asyncio.all_tasks()) > baseline_tasks:
                    await asyncio.sleep(0.05)
        tasks = len(asyncio.all_tasks()) - baseline_tasks
        return rss, len(server.sessions), tasks

    rss, sessions, tasks = with_server(config, factory, body)
    print(f"RSS over 100 cycles, 10 with media (MB): {[round(x) for x in rss]}, tasks left {tasks}")
    assert sessions == 0
    assert tasks <= 0  # no task left behind by a session
    assert rss[-1] - rss[2] < 40, rss  # after the first peers (models and codecs warmed up)
