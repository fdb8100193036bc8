"""The live wing on fake stages (stream/analysis/fakes.py): typed commands, the session host,
the publisher page, WHIP and `watch` over real sockets and real aiortc peers, in milliseconds
to a second or two each, with no model loaded.

The media are synthetic: coloured, banded rectangles that the fake detector finds and the fake
embedder tells apart by colour, sent through real VP8 encoding over loopback WebRTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import http.client
import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import jsonschema
import numpy as np
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.core.config import Config, WhipToken, load_config
from stream.core.errors import EmotionStreamError
from stream.core.types import U8
from stream.live.events import schema
from stream.live.host import Refused, SessionHost
from stream.live.protocol import (
    COMMAND_TYPES,
    BadMessage,
    Bye,
    Exclude,
    Hello,
    Offer,
    Rename,
    RenameSpeaker,
    Reset,
    command_schema,
    parse_command,
)
from stream.live.server import LiveServer
from stream.live.session import Subscriber
from stream.live.source import ReceivedVideo, TrackSink
from stream.live.testing import run_session

ROOT = Path(__file__).resolve().parent.parent
EVENTS = jsonschema.Draft202012Validator(schema())
COMMANDS = jsonschema.Draft202012Validator(command_schema())
TOKEN = "fake-whip-token-0123456789"
#: Two people: red on the left, blue on the right (`PALETTE` indices 0 and 2).
PEOPLE = [FakeFace(0, (30, 50, 110, 150)), FakeFace(2, (190, 60, 270, 160))]


@pytest.fixture(scope="module")
def cfg() -> Config:
    """The default configuration; the fakes ignore the model names."""
    return load_config(ROOT / "configs" / "default.toml", env={}).replace("audio", enabled=False)


def bounded(seconds: float) -> Callable[..., Any]:
    """Run an async test body with asyncio.run, failing after `seconds` instead of hanging."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            return asyncio.run(asyncio.wait_for(fn(*args), seconds))

        return run

    return wrap


class FakeCamera(VideoStreamTrack):
    """An aiortc video track showing `faces` at 30 fps (a synthetic camera)."""

    def __init__(self, faces: list[FakeFace] = PEOPLE) -> None:
        super().__init__()
        self.image: U8 = fake_frames(1, faces)[0].image

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Feed:
    """Events of one socket or subscriber as they arrive; awaitable conditions on them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.close_code: int | None = None

    async def send(self, msg: str | bytes | dict[str, Any]) -> None:
        self.events.append(msg if isinstance(msg, dict) else json.loads(msg))
        async with self.changed:
            self.changed.notify_all()

    async def until(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(lambda: pred(self.events) or self.close_code)
        except TimeoutError:
            raise AssertionError(f"timed out; got {self.types()}") from None
        assert pred(self.events), f"closed ({self.close_code}) first; got {self.types()}"

    async def read(self, url: str) -> None:
        """Collect every message of a WebSocket until it closes."""
        async with websockets.connect(url, max_size=2**22) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    await self.send(raw)
        self.close_code = ws.close_code or 1000
        async with self.changed:
            self.changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def types(self) -> list[str]:
        return [f"{e['type']}:{e.get('code', '')}" for e in self.events if e["type"] != "frame"]


def faces_seen(events: list[dict[str, Any]]) -> dict[int, str]:
    """Face number -> name over the frame events."""
    return {f["id"]: f["name"] for e in events if e["type"] == "frame" for f in e["faces"]}


# -- typed commands --------------------------------------------------------------------------
VALID: list[tuple[dict[str, Any], Any]] = [
    ({"type": "hello", "consent": True, "purpose": " team retro "}, Hello("team retro")),
    ({"type": "hello", "consent": True}, Hello("")),
    ({"type": "offer", "sdp": "v=0\r\n"}, Offer("v=0\r\n")),
    ({"type": "rename", "id": 2, "name": " Zoë 李 🙂 "}, Rename(2, "Zoë 李 🙂")),
    ({"type": "exclude", "id": 3}, Exclude(3, True)),
    ({"type": "exclude", "id": 3, "excluded": False}, Exclude(3, False)),
    ({"type": "rename_speaker", "id": 1, "name": "Caller"}, RenameSpeaker(1, "Caller")),
    ({"type": "reset"}, Reset()),
    ({"type": "bye"}, Bye()),
]


def test_commands_parse_into_frozen_dataclasses_and_match_the_schema() -> None:
    assert {type(c) for _, c in VALID} == set(COMMAND_TYPES)
    for msg, expected in VALID:
        cmd = parse_command(json.dumps(msg))
        assert cmd == expected and msg["type"] == cmd.TYPE
        COMMANDS.validate(msg)
    with pytest.raises(AttributeError):
        Rename(1, "x").name = "y"  # type: ignore[misc]
    for bad in (
        {"type": "hello", "consent": False},
        {"type": "rename", "id": 0, "name": "x"},
        {"type": "exclude", "id": 1, "excluded": "yes"},
        {"type": "offer", "sdp": "nope"},
        {"type": "launch"},
        {"type": "rename_speaker", "id": 1, "name": ""},
    ):
        assert not COMMANDS.is_valid(bad), bad
        with pytest.raises(BadMessage):
            parse_command(json.dumps(bad))


UNPRINTABLE = {
    "C0 control": "a\x07b",
    "C1 control": "a\x85b",
    "bidi override": "evil\u202etxt.exe",
    "zero-width space": "a\u200bb",
    "lone surrogate": "a\ud800b",
    "private use": "a\ue000b",
    "unassigned": "a\u0378b",
    "empty": "   ",
    "too long": "x" * 65,
}


@pytest.mark.parametrize("kind", ["rename", "rename_speaker", "hello"])
@pytest.mark.parametrize("why", sorted(UNPRINTABLE))
def test_names_and_purposes_must_be_printable(kind: str, why: str) -> None:
    value = UNPRINTABLE[why]
    if kind == "hello":
        if why == "empty":
            return  # an empty purpose is allowed (the page asks for one; WHIP tokens carry it)
        msg: dict[str, Any] = {"type": "hello", "consent": True, "purpose": value * 4}
    else:
        msg = {"type": kind, "id": 1, "name": value}
    raw = json.dumps(msg)  # "\ud800" stays an escape: json.loads makes the lone surrogate
    with pytest.raises(BadMessage) as err:
        parse_command(raw)
    print(f"{kind} {why}: {err.value}")
    assert err.value.code == "bad_message" and "\n" not in str(err.value)


# -- a session on fake stages ----------------------------------------------------------------
def test_session_on_fake_stages_with_commands(cfg: Config) -> None:
    """Frames in, typed commands applied in order, events that validate out."""
    frames = fake_frames(30, PEOPLE)
    commands: dict[int, Any] = {
        5: [{"type": "rename", "id": 1, "name": "Alice"}, {"type": "exclude", "id": 2}],
        12: {"type": "rename_speaker", "id": 1, "name": "Caller"},
        20: {"type": "reset"},
    }
    t0 = time.perf_counter()
    events, (viewer,) = asyncio.run(
        run_session(FakeStages(cfg), frames, commands=commands, viewers=1, purpose="fakes")
    )
    ms = (time.perf_counter() - t0) * 1e3
    for ev in events:
        EVENTS.validate(ev)
    types = [e["type"] for e in events]
    print(f"30 frames, 2 faces, 4 commands: {ms:.0f} ms, {len(events)} events")
    assert types[0] == "session.started" and types[-2:] == ["session.summary", "session.ended"]
    assert events[0]["purpose"] == "fakes" and "viewer_token" in events[0]
    assert "viewer_token" not in viewer[0] and viewer[-1]["type"] == "session.ended"
    order = [t for t in types if t in ("face.renamed", "face.excluded", "speaker.renamed")]
    assert order == ["face.renamed", "face.excluded", "speaker.renamed"]
    assert types.index("session.reset") > types.index("speaker.renamed")
    frames_ev = [e for e in events if e["type"] == "frame"]
    assert len(frames_ev) == 30
    before_reset = frames_ev[6:19]
    named = {f["id"]: (f["name"], f.get("excluded", False)) for f in before_reset[-1]["faces"]}
    assert named == {1: ("Alice", False), 2: ("Face 2", True)}
    assert faces_seen(frames_ev[25:]) == {1: "Face 1", 2: "Face 2"}  # reset: numbering again
    assert ms < 5000


# -- the host --------------------------------------------------------------------------------
class ListSource:
    """A `MediaSource` playing frames at `fps` (as a camera would); `done` at the end."""

    def __init__(self, frames: list[Any], fps: float = 50.0) -> None:
        self.frames = frames
        self.fps = fps
        self.done = asyncio.Event()
        self.closed = False

    async def start(self, sink: TrackSink) -> None:
        async def video() -> AsyncIterator[ReceivedVideo]:
            try:
                for f in self.frames:
                    if self.closed:
                        return
                    yield ReceivedVideo(f.t, time.perf_counter(), partial(np.asarray, f.image))
                    await asyncio.sleep(1 / self.fps)  # media pace, not synchronisation
            finally:
                self.done.set()

        sink.add_video("list", video())

    async def close(self) -> None:
        self.closed = True


def test_host_opens_admits_closes_and_saves(cfg: Config, tmp_path: Path) -> None:
    @bounded(30)
    async def main() -> dict[str, Any]:
        host = SessionHost(cfg.replace("live", max_sessions=2), FakeStages(cfg), pace=False)
        host.save_reports = tmp_path
        out: dict[str, Any] = {"capacity": host.capacity}
        a = await host.open("first call", "page")
        b = await host.open("second call", "whip")
        with pytest.raises(Refused) as full:
            await host.open("third call", "watch")
        out["refused"] = full.value
        feed = Feed()
        a.subscribe(Subscriber(feed.send, "viewer"))
        source = ListSource(fake_frames(50, PEOPLE))
        await a.attach(source)
        with pytest.raises(BadMessage):  # one source per session unless reset
            await a.attach(ListSource([]))
        await feed.until(has_faces(5), 10)
        out["calls"] = await host.cluster.calls()
        out["summary"] = await host.close(a, "publisher left")
        out["again"] = await host.close(a, "publisher left")
        out["source_closed"] = source.closed
        out["open_after"] = sorted(host.sessions) == [b.id]
        c = await host.open("third call, now with room", "watch")  # room again
        out["left"] = await host.shutdown()
        out["ids"] = (a.id, b.id, c.id)
        out["feed"] = feed
        return out

    out = main()
    feed, refused = out["feed"], out["refused"]
    print(f"refused: {refused}; wall: {[(c['via'], c['purpose']) for c in out['calls']]}")
    assert out["capacity"] == 2
    assert refused.room is None and refused.exit_code == 6
    assert isinstance(refused, EmotionStreamError) and "\n" not in str(refused)
    assert sorted((c["via"], c["purpose"]) for c in out["calls"]) == [
        ("page", "first call"),
        ("whip", "second call"),
    ]
    assert out["summary"]["type"] == "session.summary" and out["summary"]["faces"]
    assert out["again"] is None and out["source_closed"] and out["open_after"]
    assert [e["type"] for e in feed.events[-2:]] == ["session.summary", "session.ended"]
    assert feed.events[-1]["reason"] == "publisher left"
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"session-{out['ids'][0]}.{x}" for x in ("csv", "html", "json")]
    assert len(out["left"]) == 2  # shutdown closed the other two (no faces: nothing saved)


# -- the server: page and WHIP ---------------------------------------------------------------
async def _server(cfg: Config, **live: Any) -> LiveServer:
    c = cfg.replace("live", port=0, **live)
    c = c.replace("whip", tokens=(WhipToken(TOKEN, "WHIP on fake stages"),))
    server = LiveServer(c, stages=FakeStages(c))
    await server.start()
    return server


class Page:
    """A publisher page: consent, an offer with a fake camera, its events."""

    def __init__(self, url: str, purpose: str) -> None:
        self.url = url
        self.purpose = purpose
        self.feed = Feed()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.ws: Any = None
        self.task: asyncio.Task[Any] | None = None

    async def start(self, offer: bool = True) -> None:
        self.ws = await websockets.connect(self.url, max_size=2**22)
        await self.send({"type": "hello", "consent": True, "purpose": self.purpose})
        self.task = asyncio.ensure_future(self._read())
        if offer:
            self.pc.addTrack(FakeCamera())
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp})

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                ev = json.loads(raw)
                if ev["type"] == "answer" and self.pc.signalingState == "have-local-offer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(ev["sdp"], "answer"))
                await self.feed.send(ev)
        self.feed.close_code = self.ws.close_code or 1000
        async with self.feed.changed:
            self.feed.changed.notify_all()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.pc.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


def has_faces(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda evs: sum(1 for e in evs if e["type"] == "frame" and e["faces"]) >= n


def test_page_session_commands_viewer_and_full_worker(cfg: Config) -> None:
    @bounded(60)
    async def main() -> dict[str, Any]:
        server = await _server(cfg, max_sessions=1)
        base = f"127.0.0.1:{server.port}"
        page, late = Page(f"ws://{base}/ws", "page on fakes"), Page(f"ws://{base}/ws", "late")
        viewer = Feed()
        try:
            t0 = time.perf_counter()
            await page.start()
            await page.feed.until(has_faces(3), 20)
            first_face_s = time.perf_counter() - t0
            started = page.feed.events[0]
            view = f"ws://{base}/ws/view?session={started['session']}"
            watching = asyncio.ensure_future(viewer.read(f"{view}&token={started['viewer_token']}"))
            await viewer.until(lambda evs: bool(evs), 10)
            await page.send({"type": "rename", "id": 1, "name": "Alice"})
            await page.send({"type": "rename", "id": 2, "name": "bad\u202ename"})
            await viewer.until(lambda evs: "Alice" in faces_seen(evs).values(), 10)
            await late.start(offer=False)  # the worker is full: 4503, no redirect (no cluster)
            assert late.task is not None
            await asyncio.wait_for(late.task, 10)
            await page.send({"type": "bye"})
            await viewer.until(lambda evs: evs[-1]["type"] == "session.ended", 10)
            await asyncio.wait_for(watching, 10)
            return {
                "page": page.feed,
                "viewer": viewer,
                "late": late.feed,
                "first_face_s": first_face_s,
                "left": len(server.sessions),
            }
        finally:
            await page.close()
            await late.close()
            await server.shutdown()

    out = main()
    page, viewer, late = out["page"], out["viewer"], out["late"]
    for ev in page.events + viewer.events:
        EVENTS.validate(ev)
    print(
        f"page on fake stages: first face {out['first_face_s']:.2f} s after hello; "
        f"{len(viewer.of('frame'))} frames at the viewer; late publisher closed {late.close_code}"
    )
    assert {1, 2} <= set(faces_seen(page.events))
    errors = [e for e in page.of("error")]
    assert [e["code"] for e in errors] == ["bad_message"] and "printable" in errors[0]["message"]
    assert page.events[0]["purpose"] == "page on fakes"
    assert viewer.events[0]["role"] == "viewer" and "viewer_token" not in viewer.events[0]
    assert viewer.events[-1]["reason"] == "publisher left" and out["left"] == 0
    assert late.events == [] and late.close_code == 4503


def _http(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


async def whip_offer(pc: RTCPeerConnection) -> bytes:
    pc.addTrack(FakeCamera())
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp).encode()


WHIP_HEADERS = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}


def test_whip_session_refusal_and_delete(cfg: Config) -> None:
    @bounded(60)
    async def main() -> dict[str, Any]:
        server = await _server(cfg, max_sessions=1)
        port, out = server.port, dict[str, Any]()
        pc, other = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
        viewer = Feed()
        try:
            offer = await whip_offer(pc)
            st, h, body = await asyncio.to_thread(_http, port, "POST", "/whip", offer, WHIP_HEADERS)
            out["post"] = (st, h.get("location"))
            await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
            path = h["x-viewer"].split("?", 1)[1]
            watching = asyncio.ensure_future(viewer.read(f"ws://127.0.0.1:{port}/ws/view?{path}"))
            await viewer.until(has_faces(3), 20)
            out["wall"] = await server.cluster.calls()
            st, h, body = await asyncio.to_thread(
                _http, port, "POST", "/whip", await whip_offer(other), WHIP_HEADERS
            )
            out["full"] = (st, h.get("retry-after"), h.get("x-worker-with-room"), body)
            st, _, _ = await asyncio.to_thread(
                _http, port, "DELETE", out["post"][1], b"", WHIP_HEADERS
            )
            out["delete"] = st
            await asyncio.wait_for(watching, 10)
            out["left"] = (len(server.sessions), len(server.whip.ingests))
        finally:
            await pc.close()
            await other.close()
            await server.shutdown()
        out["viewer"] = viewer
        return out

    out = main()
    viewer = out["viewer"]
    for ev in viewer.events:
        EVENTS.validate(ev)
    print(f"WHIP on fakes: {out['post']}, full: {out['full'][:3]}, wall: {out['wall']}")
    assert out["post"][0] == 201 and out["post"][1].startswith("/whip/")
    assert [(c["via"], c["purpose"]) for c in out["wall"]] == [("whip", "WHIP on fake stages")]
    assert out["wall"][0]["faces"] or viewer.of("frame")
    assert out["full"][:3] == (503, "10", None)  # no cluster: no worker with room to name
    assert b"full" in out["full"][3] and b"cluster.capacity" in out["full"][3]
    assert out["delete"] == 200 and out["left"] == (0, 0)
    assert viewer.events[-1]["type"] == "session.ended"
    assert viewer.events[-1]["reason"] == "publisher ended the WHIP session"


# -- watch -----------------------------------------------------------------------------------
def write_clip(path: Path, seconds: float, faces: list[FakeFace] = PEOPLE, fps: int = 10) -> Path:
    """An MPEG-4 file of synthetic faces (no audio)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, fps)
        stream.codec_context.bit_rate = 800_000
        for f in fake_frames(round(seconds * fps), faces, fps):
            frame = av.VideoFrame.from_ndarray(f.image, format="bgr24")
            frame.pts = f.index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_watch_a_file_then_refused_on_a_full_worker(cfg: Config, tmp_path: Path) -> None:
    from stream.live.url import UrlSource, run_watch

    clip = write_clip(tmp_path / "fake.mp4", 1.5)
    events = tmp_path / "events.jsonl"

    @bounded(60)
    async def main() -> tuple[dict[str, Any] | None, str]:
        c = cfg.replace("live", port=0)
        summary = await run_watch(c, str(clip), "watch on fakes", events=events,
                                  stages=FakeStages(c))  # fmt: skip
        # A worker whose room is taken refuses another watch with one line.
        server = await _server(cfg, max_sessions=1)
        try:
            await server.host.open("holds the only place", "page")
            from stream.live.runner import run_live

            with pytest.raises(Refused) as refused:
                await run_live(server.config, "x", UrlSource(str(clip)), "watch", "watching",
                               server=server)  # fmt: skip
        finally:
            await server.shutdown()
        return summary, str(refused.value)

    summary, refused = main()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for ev in lines:
        EVENTS.validate(ev)
    print(f"watch of a 1.5 s file: {len(lines)} events; refused: {refused}")
    assert lines[0]["type"] == "session.started" and lines[0]["purpose"] == "watch on fakes"
    assert set(faces_seen(lines)) == {1, 2}
    assert lines[-1] == {**lines[-1], "type": "session.ended", "reason": "source ended"}
    assert summary is not None and len(summary["faces"]) == 2
    assert refused.startswith("this worker is full") and "\n" not in refused


def test_cli_purpose_is_checked_and_refusal_exits_6(capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    code = main(["watch", "x.mp4", "--purpose", "bad\u202epurpose"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "printable" in err
    assert Refused(2, "http://b:8080/").exit_code == 6
    assert "worker http://b:8080/ has room" in str(Refused(2, "http://b:8080/"))


@pytest.mark.parametrize("command", ["watch", "join"])
def test_watch_and_join_take_the_cluster_flags(command: str) -> None:
    from stream.cli import _live_session_config, build_parser

    where = ["ws://janus:8188", "--room", "7"] if command == "join" else ["rtsp://cam/1"]
    args = build_parser().parse_args(
        [command, *where, "--purpose", "p", "--redis", "redis://10.0.0.5:6379/0",
         "--worker-url", "https://w4.example.org"]
    )  # fmt: skip
    cfg = _live_session_config(args)
    assert cfg.cluster.redis_url == "redis://10.0.0.5:6379/0"
    assert cfg.cluster.worker_url == "https://w4.example.org"


def test_janus_display_names_are_printable_or_replaced() -> None:
    from stream.live.janus import display_name

    assert display_name({"id": 7, "display": " Alice "}) == "Alice"
    for bad in (None, "", "evil\u202etxt", "a\x00b", 5, "x" * 65):
        assert display_name({"id": 7, "display": bad}) == "Participant 7", bad


def test_reset_and_a_new_offer_replace_the_media_quietly(cfg: Config) -> None:
    """After reset, a second offer replaces the session's peer: the first is closed without a
    peer_closed error, and frames come from the new camera (other people)."""

    @bounded(60)
    async def main() -> tuple[Feed, int, int]:
        server = await _server(cfg)
        page = Page(f"ws://127.0.0.1:{server.port}/ws", "reset test")
        second = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await page.start()
            await page.feed.until(has_faces(3), 20)
            await page.send({"type": "reset"})
            await page.feed.until(lambda evs: evs[-1]["type"] == "session.reset", 10)
            at = len(page.feed.events)
            second.addTrack(FakeCamera([FakeFace(5, (100, 60, 200, 180))]))  # one other person
            await second.setLocalDescription(await second.createOffer())
            await page.send({"type": "offer", "sdp": second.localDescription.sdp})
            answered = lambda evs: any(e["type"] == "answer" for e in evs[at:])  # noqa: E731
            await page.feed.until(answered, 10)
            answer = next(e for e in page.feed.events[at:] if e["type"] == "answer")
            await second.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            one_face = lambda evs: sum(len(e.get("faces", ())) == 1 for e in evs[at:]) >= 3  # noqa: E731
            await page.feed.until(one_face, 20)
            return page.feed, at, len(next(iter(server.sessions.values())).tracks)
        finally:
            await page.close()
            await second.close()
            await server.shutdown()

    feed, at, tracks = main()
    errors = [e["code"] for e in feed.of("error")]
    print(f"after reset: {len(feed.events) - at} events; errors {errors}; tracks {tracks}")
    assert errors == [] and tracks == 1  # the old peer's track is gone, closed quietly
    after = [e for e in feed.events[at:] if e["type"] == "frame" and e["faces"]]
    assert after and {f["id"] for e in after[-3:] for f in e["faces"]} == {1}
