"""Abuse and privacy: what is written to disk, inputs that used to break, limits that must hold."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

from stream.analysis.stages import Stages
from stream.core.config import Config, WhipToken
from stream.live.protocol import (
    BadMessage,
    check_offer,
    host_allowed,
    origin_allowed,
    parse_command,
)
from stream.live.server import LiveServer
from stream.live.session import Subscriber
from stream.models.registry import Manifest
from stream.models.runtime import SessionFactory
from stream.offline.analyze import analyze_file
from stream.offline.media import read_frames

from .conftest import MODELS, ROOT, VIDEO
from .live_client import Publisher, connect_publisher
from .test_server_robustness import fake_config, with_server  # noqa: F401 (a fixture)

CLIP = VIDEO / "pyfeat_single_face.mp4"  # 2.43 s, 72 frames at 30 fps, one face, mp3 audio


# --- what is written to disk ---------------------------------------------------------------------


def _fresh_env(tmp: Path) -> tuple[dict[str, str], Path, Path]:
    """Environment with an empty HOME, no XDG cache override and a private TMPDIR."""
    home, scratch = tmp / "home", tmp / "scratch"
    home.mkdir()
    scratch.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(scratch)}
    env.update(EMOTION_STREAM_MODELS=str(MODELS), PYTHONPATH=str(ROOT))
    for var in (
        "XDG_CACHE_HOME",
        "EMOTION_STREAM_CACHE",
        "EMOTION_STREAM_CONFIG",
        "ORT_DISABLE_TELEMETRY",
        "ORT_TELEMETRY_DISABLED",
    ):
        env.pop(var, None)
    return env, home, scratch


def _written(*roots: Path) -> list[str]:
    return sorted(str(p.relative_to(r.parent)) for r in roots for p in r.rglob("*") if p.is_file())


@pytest.mark.integration
def test_analyze_writes_nothing_but_the_hash_cache(tmp_path: Path) -> None:
    env, home, scratch = _fresh_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "stream", "analyze", str(CLIP)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    files = _written(home, scratch, cwd)
    print("files written by analyze:", files)
    # ONNX Runtime's telemetry used to add .cache/Microsoft/DeveloperTools/.onnxruntime/
    # {deviceid,onnxruntime.db}; the documented sha256 cache is the only file allowed.
    assert files == ["home/.cache/emotion-stream/hashes.json"]


@pytest.mark.integration
def test_serve_writes_nothing_but_the_hash_cache(tmp_path: Path) -> None:
    import websockets.sync.client as wsc

    env, home, scratch = _fresh_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "stream", "serve", "--port", "0"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is listening (or exits)
        assert "serving on http://127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        with wsc.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "hello", "consent": True}))
            assert json.loads(ws.recv(timeout=20))["type"] == "session.started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err  # Ctrl-C: interrupted
    files = _written(home, scratch, cwd)
    print("files written by serve:", files)
    assert files == ["home/.cache/emotion-stream/hashes.json"]


# --- models --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_warm_up_runs_for_every_model(
    factory: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Every ONNX model (a `bundle` such as MediaPipe's .task file is for the benchmark peer only).
    names = [
        s.name for s in Manifest.load() if (MODELS / s.file).is_file() and s.file.endswith(".onnx")
    ]
    assert "silero_vad_v6" in names and len(names) >= 7
    caplog.set_level(logging.WARNING, logger="stream.models.runtime")
    ran = {name: SessionFactory._warm_up(factory.get(name), name) for name in names}
    print("warm-up:", ran)
    # Silero's state [2, batch, 128] used to get 64 as its batch and fail on every start.
    assert all(ran.values()), ran
    assert "warm-up failed" not in caplog.text


# --- files whose timestamps restart -------------------------------------------------------------


def _remux_ts(src: Path, dst: Path) -> None:
    """Copy a clip's video and audio packets into MPEG-TS (what `ffmpeg -c copy a.ts` does)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


@pytest.fixture(scope="module")
def concatenated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same clip twice, concatenated as MPEG-TS (`cat a.ts a.ts`): timestamps restart."""
    folder = tmp_path_factory.mktemp("ts")
    part = folder / "a.ts"
    _remux_ts(CLIP, part)
    both = folder / "aa.ts"
    both.write_bytes(part.read_bytes() * 2)
    return both


@pytest.mark.integration
def test_timestamp_restart_continues_media_time(concatenated: Path) -> None:
    warnings: list[str] = []
    frames = list(read_frames(concatenated, 0.0, warnings))
    times = np.array([f.t for f in frames])
    sampled = list(read_frames(concatenated, 10.0))
    print(f"{len(frames)} frames to {times[-1]:.2f} s; {len(sampled)} at 10 fps; {warnings}")
    assert len(frames) == 144
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(143 / 30, abs=0.05)
    # The second half used to be skipped: its times were below the sampling grid.
    assert 46 <= len(sampled) <= 50 and sampled[-1].t > 4.6
    assert len(warnings) == 1 and "restart" in warnings[0] and "2.37 s" in warnings[0]


@pytest.mark.integration
def test_analyze_covers_both_halves_of_a_concatenated_file(
    concatenated: Path, config: Config, stages: Stages
) -> None:
    result = analyze_file(concatenated, config, stages, fps=10.0).to_dict()
    face = result["faces"][0]
    print("concatenated:", result["analysis"]["analysed_frames"], face["visible_s"])
    assert result["analysis"]["complete"] is True
    assert result["analysis"]["analysed_frames"] >= 46
    assert len(result["faces"]) == 1 and face["visible_s"] > 4.4
    assert result["source"]["duration_s"] == pytest.approx(144 / 30, abs=0.05)
    assert ["restart" in w for w in result["analysis"]["warnings"]] == [True]


# --- the live server: helpers -------------------------------------------------------------------


async def close_code(ws: Any, timeout: float = 20) -> int:
    """Read until the server closes the socket; its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


async def next_event(ws: Any, *types: str, timeout: float = 30) -> dict[str, Any]:
    """The next event of one of `types` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            ev: dict[str, Any] = json.loads(await ws.recv())
            if ev["type"] in types:
                return ev


async def raw_http(addr: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; the status, headers (lower-case names) and body of the reply."""
    host, port = addr.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    pairs = [line.split(": ", 1) for line in lines[1:] if ": " in line]
    headers = {name.lower(): value for name, value in pairs}
    return int(lines[0].split()[1]), headers, body


def get(path: str, host: str = "127.0.0.1", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# --- protocol: one place that validates input ---------------------------------------------------


def test_deeply_nested_json_is_a_clean_error() -> None:
    with pytest.raises(BadMessage) as err:
        parse_command("[" * 100_000 + "]" * 100_000)  # used to raise RecursionError
    assert err.value.code == "bad_json"


def _offer_sdp(video: int, audio: int, extra: str = "") -> str:
    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    m = ["m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"] * video + [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    ] * audio
    return head + "".join(m) + extra


@pytest.mark.parametrize(
    ("video", "audio", "extra", "code"),
    [
        (0, 300, "", "too_many_tracks"),
        (527, 0, "", "too_many_tracks"),
        (5, 0, "", "too_many_tracks"),
        (1, 3, "", "too_many_tracks"),
        (1, 1, "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" * 2, "too_many_tracks"),
        (0, 0, "", "invalid_sdp"),  # a bare v=0 used to lock the session
        (1, 1, "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", None),
        (4, 2, "", None),
    ],
)
def test_offers_are_limited_in_tracks(video: int, audio: int, extra: str, code: str | None) -> None:
    sdp = _offer_sdp(video, audio, extra)
    if code is None:
        check_offer(sdp, 4, 2)
        return
    with pytest.raises(BadMessage) as err:
        check_offer(sdp, 4, 2)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("127.0.0.1:8080", (), True),
        ("localhost:8080", (), True),
        ("[::1]:8080", (), True),
        ("192.168.1.20", (), True),
        ("attacker.example:8080", (), False),  # DNS rebinding: a name resolving to 127.0.0.1
        ("studio.example.org", ("studio.example.org",), True),
        ("anything.example", ("*",), True),
        ("", (), False),
        (None, (), False),
        ("[bad", (), False),
    ],
)
def test_host_header_allow_list(host: str | None, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, allowed) is ok


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, (), True),  # not a browser
        ("http://127.0.0.1:8080", (), True),  # the server's own pages
        ("http://127.0.0.1:9999", (), False),  # another local web app
        ("https://evil.example", (), False),
        ("null", (), False),
        ("null", ("null",), True),  # a local file page (OBS), when allowed
        ("https://studio.example.org", ("https://studio.example.org/",), True),
        ("https://evil.example", ("*",), True),
    ],
)
def test_origin_allow_list(origin: str | None, allowed: tuple[str, ...], ok: bool) -> None:
    assert origin_allowed(origin, "127.0.0.1:8080", allowed) is ok


def test_an_overflowing_subscriber_has_its_socket_closed() -> None:
    async def main() -> tuple[list[str], bool, int]:
        stuck = asyncio.Event()
        closed: list[str] = []

        async def send(_: str) -> None:
            await stuck.wait()  # a client that never reads

        async def overflow() -> None:
            closed.append("socket closed")

        sub = Subscriber(send, "viewer", limit=4, on_overflow=overflow)
        for i in range(10):
            sub.offer({"type": "face.renamed", "id": i})
        stuck.set()
        await asyncio.wait_for(sub.task, 5)
        return closed, sub.closed, sub.queue.qsize()

    closed, marked, queued = asyncio.run(main())
    assert closed == ["socket closed"] and marked and queued == 0


# --- the live server: HTTP ----------------------------------------------------------------------


def test_http_methods_host_headers_and_bad_paths(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
        requests = {
            "get": get("/"),
            "head": get("/", method="HEAD"),
            "post": get("/metrics", method="POST", extra="Content-Length: 0\r\n"),
            "delete": get("/", method="DELETE"),
            "nul": get("/a\x00b.html"),
            "long": get("/" + "a" * 300 + ".js"),
            "long_dir": get("/" + "b" * 256 + "/x.js"),
            "rebind": get("/metrics", host="attacker.example:8080"),
            "named": get("/healthz", host="localhost:8080"),
        }
        return {k: await raw_http(addr, r) for k, r in requests.items()}

    r = with_server(fake_config, None, body)
    print({k: v[0] for k, v in r.items()})
    status, headers, page = r["get"]
    assert status == 200 and b"consent" in page
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert headers["referrer-policy"] == "no-referrer"
    status, headers, page = r["head"]
    assert status == 200 and page == b"" and int(headers["content-length"]) == len(r["get"][2])
    assert r["post"][0] == 405 and r["post"][1]["allow"] == "GET, HEAD"
    assert r["delete"][0] == 405
    # These used to raise inside the server (500, the path copied into the log).
    assert r["nul"][0] in (400, 404) and r["long"][0] == 404 and r["long_dir"][0] == 404
    assert r["rebind"][0] == 403 and b"emotion_stream" not in r["rebind"][2]
    assert r["named"][0] == 200


def test_websocket_origin_check(fake_config: Config) -> None:  # noqa: F811
    async def attempt(addr: str, origin: str | None) -> str:
        headers = {"Origin": origin} if origin else {}
        try:
            async with websockets.connect(f"ws://{addr}/ws", additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "hello", "consent": True}))
                return str((await next_event(ws, "session.started"))["type"])
        except websockets.InvalidStatus as exc:
            return str(exc.response.status_code)

    async def body(server: LiveServer, addr: str) -> list[str]:
        port = addr.split(":")[1]
        origins = [
            None,
            f"http://{addr}",
            "https://evil.example",
            f"http://127.0.0.1:{int(port) + 1}",
        ]
        origins.append("https://studio.example.org")
        return [await attempt(addr, o) for o in origins]

    allowed = ("https://studio.example.org",)
    got = with_server(fake_config, None, body, allowed_origins=allowed)
    print("origins:", got)
    assert got == ["session.started", "session.started", "403", "403", "session.started"]


# --- the live server: sessions ------------------------------------------------------------------


def test_deep_json_and_non_ascii_viewer_token_are_clean_errors(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> tuple[str, str, int]:
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            sid = (await next_event(ws, "session.started"))["session"]
            await ws.send("[" * 30_000 + "]" * 30_000)  # under max_message_bytes
            deep = (await next_event(ws, "error"))["code"]
            await ws.send(json.dumps({"type": "rename", "id": 1, "name": "still here"}))
            alive = (await next_event(ws, "face.renamed", "error"))["type"]
            url = f"ws://{addr}/ws/view?session={sid}&token=%C3%A9t%C3%A9"
            async with websockets.connect(url) as viewer:
                code = await close_code(viewer)  # was 1011 (TypeError in compare_digest)
        return deep, alive, code

    assert with_server(fake_config, None, body) == ("bad_json", "face.renamed", 4401)


def test_sessions_without_an_offer_expire(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> tuple[int, int, int]:
        async with websockets.connect(f"ws://{addr}/ws") as silent:
            async with websockets.connect(f"ws://{addr}/ws") as squatter:
                await squatter.send(json.dumps({"type": "hello", "consent": True}))
                await next_event(squatter, "session.started")
                held = len(server.sessions)
                code = await close_code(squatter)
            silent_code = await close_code(silent)
        return held, code, silent_code

    held, code, silent = with_server(fake_config, None, body, hello_timeout_s=0.5)
    assert (held, code, silent) == (1, 4408, 4408)


def test_track_flood_is_refused_with_an_error(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> tuple[str, str, int]:
        async with websockets.connect(f"ws://{addr}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            await next_event(ws, "session.started")
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
            await pc.close()
            head, sep, media = sdp.partition("m=audio")
            flood = head + (sep + media) * 300  # 300 audio m-lines
            await ws.send(json.dumps({"type": "offer", "sdp": flood}))
            err = await next_event(ws, "error", "answer")
            await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\n"}))
            bare = await next_event(ws, "error", "answer")
            session = next(iter(server.sessions.values()))
            return err["code"], bare["code"], len(session.tracks) + (session.source is not None)

    flood, bare, built = with_server(fake_config, None, body, max_message_bytes=1 << 20)
    assert (flood, bare, built) == ("too_many_tracks", "invalid_sdp", 0)


def test_reset_allows_a_new_offer(fake_config: Config) -> None:  # noqa: F811
    async def offer(ws: Any) -> tuple[RTCPeerConnection, dict[str, Any]]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
        return pc, await next_event(ws, "answer", "error")

    async def body(server: LiveServer, addr: str) -> list[str]:
        got = []
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            await next_event(ws, "session.started")
            pcs = []
            for before in (None, None, "reset"):
                if before:
                    await ws.send(json.dumps({"type": before}))
                    await next_event(ws, "session.reset")
                pc, ev = await offer(ws)
                pcs.append(pc)
                got.append(ev["type"] if ev["type"] == "answer" else ev["code"])
            for pc in pcs:
                await pc.close()
        return got

    assert with_server(fake_config, None, body) == ["answer", "bad_message", "answer"]


class PausableCamera(VideoStreamTrack):
    """A sender's camera that can stop delivering frames (peer still open) and resume."""

    def __init__(self, image: np.ndarray, fps: float = 15.0) -> None:
        super().__init__()
        self.image = image
        self.period = 1.0 / fps
        self.running = asyncio.Event()
        self.running.set()
        self.due = 0.0
        self.pts = 0

    async def recv(self) -> av.VideoFrame:
        await self.running.wait()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(self.due - loop.time(), 0.0))  # the camera's frame pacing
        self.due = max(self.due + self.period, loop.time())
        frame = av.VideoFrame.from_ndarray(self.image, format="bgr24")
        frame.pts, frame.time_base = self.pts, Fraction(1, 90_000)
        self.pts += int(90_000 * self.period)
        return frame


def _first_frame(clip: Path, width: int = 320) -> np.ndarray:
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0))
        h = round(frame.height * width / frame.width) // 2 * 2
        return np.ascontiguousarray(frame.to_ndarray(format="bgr24", width=width, height=h))


@pytest.mark.integration
def test_stall_then_resume_recovers_analysis_with_bounded_queues(
    config: Config, factory: SessionFactory
) -> None:
    camera = PausableCamera(_first_frame(CLIP))

    async def frames(pub: Publisher, n: int) -> tuple[int, int]:
        """Wait for n frame events; the fullest server-side track queue seen meanwhile."""
        got, deepest = 0, 0
        async with asyncio.timeout(40):
            async for ev in pub.events():
                if ev["type"] == "frame":
                    got += 1
                    for receiver in pub_session[0].source.pc.getReceivers():
                        # aiortc's unbounded queue of decoded frames waiting to be read
                        deepest = max(deepest, receiver.track._queue.qsize())
                    if got >= n:
                        return got, deepest
        return got, deepest

    pub_session: list[Any] = []

    async def body(server: LiveServer, addr: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with connect_publisher(f"ws://{addr}/ws", [camera]) as pub:
            async with asyncio.timeout(30):
                async for ev in pub.events():
                    if ev["type"] == "answer":
                        break
            pub_session.append(next(iter(server.sessions.values())))
            out["before"] = await frames(pub, 5)
            camera.running.clear()  # the camera stops; the peer stays open
            async with asyncio.timeout(20):
                async for ev in pub.events():
                    if ev["type"] == "error":
                        out["timeout"] = ev["code"]
                        break
            camera.running.set()
            out["after"] = await frames(pub, 20)
            out["faces"] = pub_session[0].summary()["faces"]
        return out

    out = with_server(config, factory, body, idle_timeout_s=1.0)
    print("stall:", {k: v for k, v in out.items() if k != "faces"})
    assert out["timeout"] == "media_timeout"
    # Analysis used to stop for good here while aiortc kept queueing every received frame.
    assert out["after"][0] == 20
    assert out["after"][1] <= 5, out["after"]
    assert len(out["faces"]) == 1


@pytest.mark.integration
def test_webrtc_sockets_stay_on_loopback_with_a_loopback_server(
    config: Config, factory: SessionFactory
) -> None:
    camera = PausableCamera(_first_frame(CLIP))

    async def body(server: LiveServer, addr: str) -> tuple[list[str], int]:
        candidates: list[str] = []
        frames = 0
        async with connect_publisher(f"ws://{addr}/ws", [camera]) as pub:
            async with asyncio.timeout(30):
                async for ev in pub.events():
                    if ev["type"] == "answer":
                        lines = ev["sdp"].splitlines()
                        candidates = [x.split()[4] for x in lines if x.startswith("a=candidate:")]
                    frames += ev["type"] == "frame"
                    if frames >= 3:
                        break
        return candidates, frames

    candidates, frames = with_server(config, factory, body)
    print("answer candidates:", candidates)
    # aioice used to gather on every interface but loopback, whatever the HTTP side bound to.
    assert candidates and set(candidates) == {"127.0.0.1"} and frames == 3


def test_non_ascii_report_token_is_a_clean_404(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> tuple[int, int]:
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            started = await next_event(ws, "session.started")
            sid, token = started["session"], started["viewer_token"]
            wrong = await raw_http(addr, get(f"/report/{sid}.json?token=%C3%A9"))
            right = await raw_http(addr, get(f"/report/{sid}.json?token={token}"))
        return wrong[0], right[0]

    assert with_server(fake_config, None, body) == (404, 200)  # was 500 (TypeError)


# --- malformed and unusual HTTP (issue 20's probes) ---------------------------------------------


WHIP_TOKEN = "probe-token-0123456789"


def test_malformed_http_is_answered_and_never_an_internal_error(
    fake_config: Config,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    sdp = _offer_sdp(1, 0)
    whip = f"POST /whip HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WHIP_TOKEN}\r\n"
    sdp_type = "Content-Type: application/sdp\r\n"
    requests = {
        "pipelined": get("/healthz") * 2,
        "get_body": get("/healthz", extra="Content-Length: 5\r\n") + b"hello",
        "post_whipx": get("/whipx", method="POST", extra="Content-Length: 5\r\n") + b"hello",
        "garbage": b"\x16\x03\x01 hello there\r\n\r\n",
        "http2": b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        "non_ascii_path": "GET /\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("latin-1"),
        "chunked_get": get("/", extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
        "big_head": get("/", extra="X-Pad: " + "a" * 20_000 + "\r\n"),
        "whip_big_head": (whip + "X-Pad: " + "a" * 20_000 + "\r\n\r\n").encode(),
        "whip_headers": (whip + "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n").encode(),
        "whip_minus": (whip + sdp_type + "Content-Length: -1\r\n\r\n").encode(),
        "whip_abc": (whip + sdp_type + "Content-Length: abc\r\n\r\n").encode(),
        "whip_ok_length": (
            whip + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode(),
    }

    async def body(server: LiveServer, addr: str) -> dict[str, int]:
        return {k: (await raw_http(addr, r))[0] for k, r in requests.items()}

    async def whip_off(server: LiveServer, addr: str) -> int:
        return (await raw_http(addr, get("/whip", method="OPTIONS")))[0]

    cfg = fake_config.replace("whip", tokens=(WhipToken(WHIP_TOKEN, "probes of the server"),))
    with caplog.at_level(logging.INFO):
        got = with_server(cfg, None, body)
        off = with_server(fake_config, None, whip_off)
    print(got, "OPTIONS /whip with WHIP off:", off)
    assert got == {
        "pipelined": 200,  # was no response and an AssertionError in the log
        "get_body": 400,  # was closed without a response
        "post_whipx": 405,  # was closed without a response
        "garbage": 400,
        "http2": 400,
        "non_ascii_path": 400,
        "chunked_get": 400,
        "big_head": 431,
        "whip_big_head": 431,  # was accepted when the head came in one read
        "whip_headers": 431,
        "whip_minus": 400,  # was 413
        "whip_abc": 400,
        "whip_ok_length": 400,  # the offer sends video but is not a real one: refused cleanly
    }
    assert off == 404  # was 204
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ("a=recvonly\r\n", "invalid_sdp"),
        ("a=inactive\r\n", "invalid_sdp"),
        ("a=sendonly\r\n", None),
        ("a=sendrecv\r\n", None),
        ("", None),  # no direction: sendrecv
    ],
)
def test_offers_must_send_media(extra: str, code: str | None) -> None:
    sdp = _offer_sdp(1, 0, extra)
    disabled = sdp.replace("m=video 9 ", "m=video 0 ")
    session_recvonly = sdp.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n")
    datachannel = _offer_sdp(0, 0, "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
    for bad in (disabled, datachannel) + ((session_recvonly,) if not extra else ()):
        with pytest.raises(BadMessage, match="unusable offer"):
            check_offer(bad, 4, 2)
    if code is None:
        check_offer(sdp, 4, 2)
        return
    with pytest.raises(BadMessage, match="unusable offer") as err:
        check_offer(sdp, 4, 2)
    assert err.value.code == code


async def _media_less_offers() -> list[str]:
    """Real aiortc offers that send nothing: recvonly video, and a data channel alone."""
    offers = []
    for kind in ("recvonly", "datachannel"):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if kind == "recvonly":
            pc.addTransceiver("video", direction="recvonly")
        else:
            pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        offers.append(pc.localDescription.sdp)
        await pc.close()
    return offers


def test_media_less_offers_are_refused_on_whip_and_websocket(fake_config: Config) -> None:  # noqa: F811
    async def body(server: LiveServer, addr: str) -> tuple[list[int], list[str], int]:
        offers = await _media_less_offers()
        statuses = []
        for sdp in offers:
            request = (
                f"POST /whip HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WHIP_TOKEN}"
                f"\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp.encode())}\r\n\r\n"
            ).encode() + sdp.encode()
            status, _, text = await raw_http(addr, request)
            statuses.append(status)
            assert b"unusable offer" in text
        held = len(server.sessions)
        codes = []
        async with websockets.connect(f"ws://{addr}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True}))
            await next_event(ws, "session.started")
            for sdp in offers:
                await ws.send(json.dumps({"type": "offer", "sdp": sdp}))
                ev = await next_event(ws, "error", "answer")
                codes.append(ev.get("code", ev["type"]))
        return statuses, codes, held

    cfg = fake_config.replace("whip", tokens=(WhipToken(WHIP_TOKEN, "probes of the server"),))
    statuses, codes, left = with_server(cfg, None, body)
    print("WHIP:", statuses, "WebSocket:", codes)
    assert statuses == [400, 400]  # was 201 and a session held for hello_timeout_s
    assert codes == ["invalid_sdp", "invalid_sdp"]  # was an answer
    assert left == 0


def test_offers_without_a_media_connection_expire(fake_config: Config) -> None:  # noqa: F811
    """A publisher that sends hello and an offer but never connects media is closed (4408)
    after hello_timeout_s, like a WHIP session; a connected publisher stays."""

    async def squat(addr: str) -> tuple[int, float]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(VideoStreamTrack())
        try:
            async with websockets.connect(f"ws://{addr}/ws") as ws:
                await ws.send(json.dumps({"type": "hello", "consent": True}))
                await pc.setLocalDescription(await pc.createOffer())
                t0 = asyncio.get_running_loop().time()
                await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
                await next_event(ws, "answer")  # never applied: no media connection
                code = await close_code(ws)
                return code, asyncio.get_running_loop().time() - t0
        finally:
            await pc.close()

    async def body(server: LiveServer, addr: str) -> tuple[list[int], str, int, int]:
        async with connect_publisher(f"ws://{addr}/ws", [VideoStreamTrack()]) as honest:
            events = honest.events()
            async with asyncio.timeout(20):
                while honest.pc.connectionState != "connected":
                    await anext(events)
            results = await asyncio.gather(*(squat(addr) for _ in range(3)))
            print("squatters closed (code, s after the offer):", results)
            after = (await anext(events))["type"]  # the honest publisher still gets events
            return [c for c, _ in results], after, len(server.sessions), honest.ws.close_code

    codes, after, left, honest_code = with_server(fake_config, None, body, hello_timeout_s=1.0)
    assert codes == [4408, 4408, 4408]  # were held until the publishers left
    assert after and left == 1 and honest_code is None


def test_reports_survive_any_stored_string(tmp_path: Path) -> None:
    """A name that cannot be encoded (a lone surrogate, from any path that stores names) used
    to make /report/ID.csv and .html answer 500 and --save-reports leave a 0-byte CSV."""
    from types import SimpleNamespace

    from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
    from stream.analysis.stream import StreamAnalysis
    from stream.core.config import load_config
    from stream.live import reports

    from .conftest import ROOT

    cfg = load_config(ROOT / "configs" / "default.toml", env={})
    analysis = StreamAnalysis(FakeStages(cfg), 10.0)
    for frame in fake_frames(10, lambda i: [FakeFace(0, (30, 40, 110, 140))]):
        analysis.push_video(frame)
    analysis.rename(1, "a\ud800b\x85\u202e")
    session = SimpleNamespace(
        id="probe-session", viewer_token="t" * 32, clock=lambda: 10.0, started=0.0,
        config=cfg, analysis=analysis,
    )  # fmt: skip
    statuses = {}
    for fmt in ("json", "csv", "html"):
        reply = reports.http_response(
            {session.id: session}, f"/report/{session.id}.{fmt}?token=" + "t" * 32
        )
        assert reply is not None
        statuses[fmt] = (reply.status_code, len(reply.body))
    saved = {p.suffix: p.stat().st_size for p in reports.save(session, tmp_path)}
    print("downloads:", statuses, "saved:", saved)
    assert all(code == 200 and size > 0 for code, size in statuses.values())
    assert set(saved) == {".json", ".csv", ".html"} and all(saved.values())


def test_ctrl_c_on_serve_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --help` lists 130 for an interrupt; Ctrl-C used to exit 0 (SIGTERM still does)."""
    from stream.analysis.fakes import FakeStages
    from stream.cli import main
    from stream.live import server as server_module

    monkeypatch.setattr(server_module, "Stages", lambda config, factory: FakeStages(config))
    start = server_module.LiveServer.start
    sent: list[int] = []

    async def start_then_signal(self: LiveServer) -> Any:
        started = await start(self)
        sig = signal.SIGINT if not sent else signal.SIGTERM
        sent.append(sig)
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), sig)  # once it listens
        return started

    monkeypatch.setattr(server_module.LiveServer, "start", start_then_signal)
    codes = [main(["serve", "--port", "0"]) for _ in range(2)]
    print("exit statuses after SIGINT, SIGTERM:", codes)
    assert codes == [130, 0]
