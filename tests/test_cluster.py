"""Two live workers sharing a real redis-server: relay, wall, a dead worker, admission.

Both workers run in this process on their own ports (LiveServer with port 0), a real aiortc
publisher streams a real clip, and viewers and the wall connect over real WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.request import urlopen

import jsonschema
import numpy as np
import pytest
import websockets

from stream.core.config import Config
from stream.live.events import schema
from stream.live.server import LiveServer
from stream.models.runtime import SessionFactory

from .conftest import VIDEO
from .live_client import Publisher, connect_publisher, player_tracks

pytest.importorskip("redis", reason="the cluster needs the 'cluster' extra (redis-py)")

VALIDATOR = jsonschema.Draft202012Validator(schema())
CLIP = VIDEO / "mexca_test_video_audio_5_seconds.mp4"  # one speaking face, with audio
HEARTBEAT_S = 0.2
TTL_S = 1.0
WALL_TOKEN = "operator-token"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (nothing saved to disk)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is missing: apt-get install -y redis-server (see .ci/run)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path_factory.mktemp("redis")
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*cmd, "--dir", str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # ends when the server exits
        if "Ready to accept connections" in line:
            break
    else:
        pytest.fail(f"redis-server did not start (exit {proc.wait()})")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


T = TypeVar("T")

#: Upper bound on one test's run: a hang fails the test instead of stalling CI.
TEST_TIMEOUT_S = 180


def bounded(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    return asyncio.wait_for(coro, TEST_TIMEOUT_S)


class Feed:
    """Messages of one WebSocket as they arrive, with their arrival time; awaitable conditions."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self.changed = asyncio.Condition()
        self.close_code: int | None = None

    async def add(self, ev: dict[str, Any]) -> None:
        self.arrived.append(time.time())
        self.events.append(ev)
        async with self.changed:
            self.changed.notify_all()

    async def until(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                done = lambda: pred(self.events) or self.close_code is not None  # noqa: E731
                await self.changed.wait_for(done)
        except TimeoutError:
            raise AssertionError(f"timed out; got {self.summary()}") from None
        assert pred(self.events), f"closed ({self.close_code}) first; got {self.summary()}"

    def summary(self) -> dict[str, Any]:
        """How many events of each type arrived."""
        counts: dict[str, Any] = {}
        for e in self.events:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
        errors = [f"{e['code']}: {e['message']}" for e in self.events if e["type"] == "error"]
        return {**counts, "errors": errors} if errors else counts

    async def read(self, url: str) -> None:
        """Collect every message until the socket closes."""
        async with websockets.connect(url, max_size=2**22) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    await self.add(json.loads(raw))
            self.close_code = ws.close_code
        async with self.changed:
            self.changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


async def _worker(
    config: Config, factory: SessionFactory, url: str, wid: str, prefix: str, capacity: int = 0
) -> LiveServer:
    cfg = config.replace("live", port=0).replace(
        "cluster",
        redis_url=url,
        worker_id=wid,
        prefix=prefix,
        capacity=capacity,
        heartbeat_s=HEARTBEAT_S,
        ttl_s=TTL_S,
        wall_token=WALL_TOKEN,
    )
    server = LiveServer(cfg, factory)
    await server.start()
    return server


async def _follow(pub: Publisher, feed: Feed) -> None:
    """The publisher's own events (the answer is applied on the way)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for ev in pub.events():
            await feed.add(ev)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@pytest.mark.integration
def test_viewer_on_another_worker_gets_the_session_and_the_wall_lists_it(
    config: Config, factory: SessionFactory, redis_url: str
) -> None:
    async def main() -> tuple[Feed, Feed, Feed, Feed, int, int, str]:
        a = await _worker(config, factory, redis_url, "A", "t1")
        b = await _worker(config, factory, redis_url, "B", "t1")
        own, local, remote, wall = Feed(), Feed(), Feed(), Feed()
        try:
            tracks = player_tracks(CLIP, audio=True)  # one pass (5 s): looping may stall
            async with connect_publisher(f"ws://127.0.0.1:{a.port}/ws", tracks) as pub:
                following = asyncio.create_task(_follow(pub, own))
                await own.until(lambda evs: bool(evs), 20)
                sid, token = own.events[0]["session"], own.events[0]["viewer_token"]
                view = f"/ws/view?session={sid}&token={token}"
                bad_view, bad_wall = Feed(), Feed()
                await bad_view.read(f"ws://127.0.0.1:{b.port}/ws/view?session={sid}&token=x")
                await bad_wall.read(f"ws://127.0.0.1:{b.port}/ws/wall?token=x")
                readers = [
                    asyncio.create_task(local.read(f"ws://127.0.0.1:{a.port}{view}")),
                    asyncio.create_task(remote.read(f"ws://127.0.0.1:{b.port}{view}")),
                    asyncio.create_task(
                        wall.read(f"ws://127.0.0.1:{b.port}/ws/wall?token={WALL_TOKEN}")
                    ),
                ]

                def wall_ready(evs: list[dict[str, Any]]) -> bool:
                    lines = [c for c in evs[-1]["calls"] if c["session"] == sid] if evs else []
                    return bool(lines and lines[0]["faces"] and lines[0]["speech_share"])

                await remote.until(lambda evs: len(remote.of("frame")) >= 10, 30)
                await wall.until(wall_ready, 30)
                await pub.send({"type": "bye"})
                await remote.until(lambda evs: evs[-1]["type"] == "session.ended", 15)
                await local.until(lambda evs: evs[-1]["type"] == "session.ended", 15)
                following.cancel()
                readers[2].cancel()
                await asyncio.gather(following, *readers, return_exceptions=True)
        finally:
            await a.shutdown()
            await b.shutdown()
        return own, local, remote, wall, bad_view.close_code or 0, bad_wall.close_code or 0, sid

    _, local, remote, wall, bad_view, bad_wall, sid = asyncio.run(
        asyncio.wait_for(main(), TEST_TIMEOUT_S)
    )
    assert bad_view == 4401 and bad_wall == 4401
    for ev in remote.events + wall.events:
        VALIDATOR.validate(ev)
    first = remote.events[0]
    assert first["type"] == "session.started" and first["role"] == "viewer"
    assert "viewer_token" not in first and first["session"] == sid
    assert [e["type"] for e in remote.events[-2:]] == ["session.summary", "session.ended"]
    assert remote.events[-1]["reason"] == "publisher left"
    seqs = [e["seq"] for e in remote.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Every event the worker's own viewer got after the remote viewer joined reached B too.
    joined = remote.events[1]["seq"]
    local_seqs = {
        e["seq"] for e in local.events if e["seq"] >= joined and e["type"] != "session.started"
    }
    assert local_seqs <= set(seqs), sorted(local_seqs - set(seqs))[:10]
    assert {"frame", "face.summary", "prosody"} <= {e["type"] for e in remote.events}
    assert remote.events[-2]["faces"] == local.events[-2]["faces"]  # the same summary
    # Latency: the owner stamps ts when it publishes; both viewers run in this process.
    at_a = {e["seq"]: t for e, t in zip(local.events, local.arrived, strict=True)}
    direct, relayed, extra = [], [], []
    for ev, t in zip(remote.events, remote.arrived, strict=True):
        if ev["type"] == "frame" and ev["seq"] in at_a:
            direct.append((at_a[ev["seq"]] - ev["ts"]) * 1e3)
            relayed.append((t - ev["ts"]) * 1e3)
            extra.append((t - at_a[ev["seq"]]) * 1e3)
    print(
        f"\ncluster relay: {len(relayed)} frame events; publish -> viewer on A p50 "
        f"{_pct(direct, 50):.1f} p95 {_pct(direct, 95):.1f} ms; -> viewer on B via Redis p50 "
        f"{_pct(relayed, 50):.1f} p95 {_pct(relayed, 95):.1f} ms; B after A p50 "
        f"{_pct(extra, 50):.1f} p95 {_pct(extra, 95):.1f} ms"
    )
    assert len(relayed) >= 10
    assert _pct(relayed, 95) < 250, relayed
    # The wall on B lists the call of A: who, the dominant expression, the speech.
    line = next(c for c in wall.events[-1]["calls"] if c["session"] == sid)
    print(f"wall line: {line}")
    assert line["worker"] == "A" and line["purpose"] == "test"
    labels = {
        f["dominant"]["label"]
        for e in local.events
        if e["type"] in ("face.summary", "session.summary")
        for f in e["faces"]
    }
    assert line["faces"] and all(f["dominant"]["label"] in labels for f in line["faces"])
    assert 0 < line["speech_share"] <= 1
    talk = [f["talk_share"] for f in line["faces"] if f["talk_share"] is not None]
    assert talk and sum(talk) <= 1.0 + 1e-6


@pytest.mark.integration
def test_dead_worker_sessions_end_for_their_viewers_elsewhere(
    config: Config, factory: SessionFactory, redis_url: str
) -> None:
    async def main() -> tuple[Feed, float, Feed, Feed]:
        a = await _worker(config, factory, redis_url, "A", "t2")
        b = await _worker(config, factory, redis_url, "B", "t2")
        own, remote, wall_before, wall_after = Feed(), Feed(), Feed(), Feed()
        try:
            tracks = player_tracks(CLIP, loop=True)
            async with connect_publisher(f"ws://127.0.0.1:{a.port}/ws", tracks) as pub:
                following = asyncio.create_task(_follow(pub, own))
                await own.until(lambda evs: bool(evs), 20)
                sid, token = own.events[0]["session"], own.events[0]["viewer_token"]
                url = f"ws://127.0.0.1:{b.port}/ws/view?session={sid}&token={token}"
                viewing = asyncio.create_task(remote.read(url))
                await remote.until(lambda evs: len(remote.of("frame")) >= 5, 30)
                wall = f"ws://127.0.0.1:{b.port}/ws/wall?token={WALL_TOKEN}"
                reading = asyncio.create_task(wall_before.read(wall))
                await wall_before.until(lambda evs: bool(evs), 10)
                reading.cancel()
                killed = time.monotonic()
                await a.cluster.halt()  # heartbeats and relay stop, records stay: a crash
                await remote.until(lambda evs: evs[-1]["type"] == "session.ended", 10)
                detected = time.monotonic() - killed
                reading = asyncio.create_task(wall_after.read(wall))
                await wall_after.until(lambda evs: bool(evs), 10)
                reading.cancel()
                following.cancel()
                viewing.cancel()  # B may keep the viewer socket open after session.ended
                await asyncio.gather(following, viewing, reading, return_exceptions=True)
        finally:
            await a.shutdown()
            await b.shutdown()
        return remote, detected, wall_before, wall_after

    remote, detected, wall_before, wall_after = asyncio.run(
        asyncio.wait_for(main(), TEST_TIMEOUT_S)
    )
    for ev in remote.events:
        VALIDATOR.validate(ev)
    ended = remote.events[-1]
    print(
        f"\ncluster: worker A halted; viewer on B told after {detected * 1e3:.0f} ms "
        f"(ttl {TTL_S:g} s, heartbeat {HEARTBEAT_S:g} s): {ended['reason']!r}"
    )
    assert ended["reason"] == "worker A lost"
    assert ended["seq"] > remote.events[-2]["seq"]
    assert TTL_S - HEARTBEAT_S - 0.1 <= detected <= TTL_S + 2 * HEARTBEAT_S + 0.5
    sid = ended["session"]
    assert [c["worker"] for c in wall_before.events[0]["calls"] if c["session"] == sid] == ["A"]
    assert all(c["session"] != sid for c in wall_after.events[0]["calls"])


@pytest.mark.integration
def test_admission_sends_a_new_publisher_to_a_worker_with_room(
    config: Config, factory: SessionFactory, redis_url: str
) -> None:
    async def hello(url: str) -> tuple[list[dict[str, Any]], int | None, Any]:
        """Connect and give consent; the events until the first one, and the close code."""
        ws = await websockets.connect(url)
        await ws.send(json.dumps({"type": "hello", "consent": True, "purpose": "admission"}))
        events = []
        with contextlib.suppress(websockets.ConnectionClosed):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            if events[0]["type"] == "error":
                await asyncio.wait_for(ws.recv(), 10)
        return events, ws.close_code, ws

    async def main() -> dict[str, Any]:
        a = await _worker(config, factory, redis_url, "A", "t3", capacity=1)
        b = await _worker(config, factory, redis_url, "B", "t3", capacity=1)
        out: dict[str, Any] = {"b_ws": f"ws://127.0.0.1:{b.port}/ws"}
        try:
            first, code, holder = await hello(f"ws://127.0.0.1:{a.port}/ws")
            out["first"], out["first_code"] = first, code
            out["second"], out["second_code"], _ = await hello(f"ws://127.0.0.1:{a.port}/ws")
            redirect = out["second"][0]
            tracks = player_tracks(CLIP, loop=True)
            own = Feed()
            async with connect_publisher(redirect["ws_url"], tracks) as pub:
                following = asyncio.create_task(_follow(pub, own))
                has_face = lambda evs: any(e["type"] == "frame" and e["faces"] for e in evs)  # noqa: E731
                await own.until(has_face, 30)
                out["on_b"] = list(own.events)
                out["b_sessions"] = list(b.sessions)
                out["third"], out["third_code"], _ = await hello(f"ws://127.0.0.1:{a.port}/ws")
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await holder.close()
        finally:
            await a.shutdown()
            await b.shutdown()
        return out

    out = asyncio.run(bounded(main()))
    assert out["first"][0]["type"] == "session.started" and out["first_code"] is None
    redirect = out["second"][0]
    VALIDATOR.validate(redirect)
    print(f"\nadmission: A full -> {redirect}")
    assert redirect["type"] == "error" and redirect["code"] == "redirect"
    assert redirect["ws_url"] == out["b_ws"] and out["second_code"] == 4503
    assert redirect["url"] == out["b_ws"].replace("ws://", "http://").removesuffix("ws")
    started = out["on_b"][0]
    assert started["type"] == "session.started" and out["b_sessions"] == [started["session"]]
    assert any(e["type"] == "frame" and e["faces"] for e in out["on_b"])
    assert out["third"] == [] and out["third_code"] == 4503  # both full: refused, no redirect


@pytest.mark.integration
def test_wall_without_redis_lists_this_workers_calls(
    config: Config, factory: SessionFactory
) -> None:
    """Without a cluster the wall still works (for one worker) and nothing touches Redis."""

    async def main() -> tuple[Feed, bool, bytes]:
        cfg = config.replace("live", port=0).replace("cluster", wall_token=WALL_TOKEN)
        server = LiveServer(cfg, factory)
        await server.start()
        wall = Feed()
        try:
            tracks = player_tracks(CLIP, loop=True)
            async with connect_publisher(f"ws://127.0.0.1:{server.port}/ws", tracks) as pub:
                own = Feed()
                following = asyncio.create_task(_follow(pub, own))
                await own.until(lambda evs: bool(evs), 20)
                page = f"http://127.0.0.1:{server.port}/wall.html?token={WALL_TOKEN}"
                html = await asyncio.to_thread(lambda: urlopen(page, timeout=10).read())
                url = f"ws://127.0.0.1:{server.port}/ws/wall?token={WALL_TOKEN}"
                reading = asyncio.create_task(wall.read(url))
                await wall.until(lambda evs: bool(evs and evs[-1]["calls"]), 10)
                reading.cancel()
                following.cancel()
                await asyncio.gather(reading, following, return_exceptions=True)
        finally:
            await server.shutdown()
        return wall, server.cluster.redis is None, html

    wall, no_redis, html = asyncio.run(bounded(main()))
    assert no_redis and b'src="wall.js"' in html
    VALIDATOR.validate(wall.events[-1])
    (line,) = wall.events[-1]["calls"]
    assert line["worker"] == "local" and line["purpose"] == "test"


def test_cluster_config_is_checked(tmp_path: Path) -> None:
    from stream.core.config import load_config
    from stream.core.errors import ConfigError

    for text, key in (
        ("[cluster]\nredis_url = 'localhost:6379'\n", "cluster.redis_url"),
        ("[cluster]\nttl_s = 0.5\n", "cluster.ttl_s"),
        ("[cluster]\nworker_url = 'w2:8080'\n", "cluster.worker_url"),
    ):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=key):
            load_config(path, env={})
