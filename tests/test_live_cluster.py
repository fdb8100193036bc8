"""One Redis-backed cluster, every way in: a WHIP call, a `watch` stream and a publisher page
session all reach the wall with their purposes and faces, count against `cluster.capacity`,
and can be viewed from another worker.

A real redis-server, real sockets and aiortc peers; the stages are the fakes of
stream/analysis/fakes.py, so nothing loads a model (a few seconds in all).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from stream.analysis.fakes import FakeFace, FakeStages
from stream.core.config import Config, WhipToken
from stream.live.events import schema
from stream.live.runner import run_live
from stream.live.server import LiveServer
from stream.live.url import UrlSource

from .test_cluster import redis_url  # noqa: F401  (the fixture: a throwaway redis-server)
from .test_live_host import (
    TOKEN,
    WHIP_HEADERS,
    Feed,
    Page,
    _http,
    cfg,  # noqa: F401  (the fixture: the default config)
    faces_seen,
    whip_offer,
    write_clip,
)

pytest.importorskip("redis", reason="the cluster needs the 'cluster' extra (redis-py)")

EVENTS = jsonschema.Draft202012Validator(schema())
WALL_TOKEN = "wall-operator-token"
#: Who the watched stream shows: yellow and magenta (the page and WHIP show red and blue).
WATCHED = [FakeFace(3, (40, 40, 120, 140)), FakeFace(4, (180, 50, 260, 150))]


def _worker_config(base: Config, url: str, wid: str, capacity: int) -> Config:
    c = base.replace("live", port=0, summary_interval_s=0.3)
    c = c.replace("whip", tokens=(WhipToken(TOKEN, "WHIP: the studio camera, speakers agreed"),))
    return c.replace(
        "cluster",
        redis_url=url,
        worker_id=wid,
        prefix="hosts",
        capacity=capacity,
        heartbeat_s=0.2,
        ttl_s=1.0,
        wall_interval_s=0.2,
        wall_token=WALL_TOKEN,
    )


async def _worker(base: Config, url: str, wid: str, capacity: int) -> LiveServer:
    c = _worker_config(base, url, wid, capacity)
    server = LiveServer(c, stages=FakeStages(c))
    await server.start()
    return server


def test_whip_watch_and_page_share_one_wall_capacity_and_viewers(
    cfg: Config,  # noqa: F811
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    clip = write_clip(tmp_path / "watched.mp4", 30.0, WATCHED)

    async def main() -> dict[str, Any]:
        a = await _worker(cfg, redis_url, "A", capacity=2)  # page + WHIP fill it
        b = await _worker(cfg, redis_url, "B", capacity=2)  # the operator's and viewers' worker
        out: dict[str, Any] = {"b_port": b.port}
        w = await _worker(cfg, redis_url, "W", capacity=1)  # the `watch` process
        stop_watch = asyncio.Event()
        watching = asyncio.ensure_future(
            run_live(w.config, "watch: lobby camera, signed", UrlSource(str(clip), audio=False),
                     "watch", "watching a test file", server=w, stop=stop_watch)
        )  # fmt: skip
        page = Page(f"ws://127.0.0.1:{a.port}/ws", "page: coaching call, both agreed")
        pc, extra = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
        wall = Feed()
        viewers: dict[str, Feed] = {}
        readers: list[asyncio.Task[Any]] = []
        try:
            t0 = time.perf_counter()
            await page.start()
            offer = await whip_offer(pc)
            st, _h, body = await asyncio.to_thread(_http, a.port, "POST", "/whip", offer,
                                                  WHIP_HEADERS)  # fmt: skip
            assert st == 201, body
            await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
            readers.append(asyncio.ensure_future(
                wall.read(f"ws://127.0.0.1:{b.port}/ws/wall?token={WALL_TOKEN}")
            ))  # fmt: skip

            def all_three(evs: list[dict[str, Any]]) -> bool:
                calls = evs[-1]["calls"] if evs else []
                return sorted(c["via"] for c in calls if c["faces"]) == ["page", "watch", "whip"]

            await wall.until(all_three, 30)
            out["wall_s"] = time.perf_counter() - t0
            out["calls"] = wall.events[-1]["calls"]
            # Capacity: A holds two sessions, its cluster.capacity; W holds its one.
            out["records"] = await b.cluster.workers()
            refused = await asyncio.to_thread(
                _http, a.port, "POST", "/whip", await whip_offer(extra), WHIP_HEADERS
            )
            out["whip_refused"] = refused[:2]
            late = Page(f"ws://127.0.0.1:{a.port}/ws", "late")
            await late.start(offer=False)
            assert late.task is not None
            await asyncio.wait_for(late.task, 10)
            out["page_refused"] = (late.feed.events, late.feed.close_code)
            # Every call, viewed from B (relayed through Redis from A and W).
            tokens = {
                **{s.id: s.viewer_token for s in a.sessions.values()},
                **{s.id: s.viewer_token for s in w.sessions.values()},
            }
            for call in out["calls"]:
                sid = call["session"]
                viewers[call["via"]] = feed = Feed()
                url = f"ws://127.0.0.1:{b.port}/ws/view?session={sid}&token={tokens[sid]}"
                readers.append(asyncio.ensure_future(feed.read(url)))
            for feed in viewers.values():
                await feed.until(lambda evs: sum(bool(e.get("faces")) for e in evs) >= 3, 20)
            # Each way out: bye, DELETE, the watch stopped; B's viewers are told.
            await page.send({"type": "bye"})
            whip_path = next(f"/whip/{c['session']}" for c in out["calls"] if c["via"] == "whip")
            out["delete"] = (await asyncio.to_thread(_http, a.port, "DELETE", whip_path, b"",
                                                     WHIP_HEADERS))[0]  # fmt: skip
            stop_watch.set()
            out["watch_summary"] = await asyncio.wait_for(watching, 20)
            for feed in viewers.values():
                await feed.until(lambda evs: evs[-1]["type"] == "session.ended", 20)
            await wall.until(lambda evs: not evs[-1]["calls"], 20)
        finally:
            stop_watch.set()
            await asyncio.gather(watching, return_exceptions=True)
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await page.close()
            await pc.close()
            await extra.close()
            for server in (a, b, w):
                await server.shutdown()
        out["viewers"] = viewers
        return out

    out = asyncio.run(asyncio.wait_for(main(), 120))
    calls = {c["via"]: c for c in out["calls"]}
    for c in out["calls"]:
        names = [(f["name"], f["dominant"]["label"]) for f in c["faces"]]
        print(f"wall line: {c['via']:<5} on {c['worker']}: {c['purpose']!r}, faces {names}")
    print(f"all three calls with faces on B's wall {out['wall_s']:.2f} s after the page's hello")
    for ev in [e for f in out["viewers"].values() for e in f.events]:
        EVENTS.validate(ev)
    # On the wall, with purposes and faces, owned by the worker that took them in.
    assert {v: (c["worker"], c["purpose"]) for v, c in calls.items()} == {
        "page": ("A", "page: coaching call, both agreed"),
        "whip": ("A", "WHIP: the studio camera, speakers agreed"),
        "watch": ("W", "watch: lobby camera, signed"),
    }
    assert all(len(c["faces"]) == 2 for c in calls.values()), calls
    # Counted against cluster.capacity: A is full, so a WHIP publisher gets 503 naming B, a
    # page publisher a redirect to B.
    records = out["records"]
    assert (records["A"]["sessions"], records["A"]["capacity"]) == (2, 2)
    assert (records["W"]["sessions"], records["W"]["capacity"]) == (1, 1)
    status, headers = out["whip_refused"]
    b_page = f"http://127.0.0.1:{out['b_port']}/"
    assert status == 503 and headers["retry-after"] == "10"
    assert headers["x-worker-with-room"] == b_page + "whip"
    events, code = out["page_refused"]
    assert code == 4503 and events[0]["code"] == "redirect" and events[0]["url"] == b_page
    # Viewed from B: faces in every call, then the end, however it came.
    for via, feed in out["viewers"].items():
        assert feed.events[0]["type"] == "session.started" and feed.events[0]["role"] == "viewer"
        assert len(faces_seen(feed.events)) == 2, via
    reasons = {v: f.events[-1]["reason"] for v, f in out["viewers"].items()}
    assert reasons == {
        "page": "publisher left",
        "whip": "publisher ended the WHIP session",
        "watch": "stopped",
    }
    assert out["delete"] == 200 and out["watch_summary"]["faces"]
