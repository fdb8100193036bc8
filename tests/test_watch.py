"""`watch URL` sources with real ffmpeg: an RTMP push to our listener, and an HTTP MPEG-TS
stream that drops and comes back (reconnect with backoff, one identity across the outage)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.live.session import LiveSession, Subscriber
from stream.live.url import UrlSource, redact, scrub

from .conftest import VIDEO

CLIP = VIDEO / "pyfeat_single_face.mp4"  # 2.4 s, one man talking, with audio
ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10"]


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        msg = "ffmpeg not installed (apt-get install ffmpeg)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it: missing there is a real failure
        pytest.skip(msg)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """Collects a session's events; waits for conditions on them without polling."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def send(self, msg: str) -> None:
        self.events.append(json.loads(msg))
        self.changed.set()

    async def until(self, cond: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not cond(self.events):
                self.changed.clear()
                await self.changed.wait()


def _faces(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "frame" and e["faces"]]


def test_redact_hides_credentials_and_keys() -> None:
    assert redact("rtsp://user:pw@cam.local:554/stream?key=abc") == "rtsp://cam.local:554/stream"
    assert redact("/tmp/a.mp4") == "/tmp/a.mp4"


@pytest.mark.integration
def test_rtmp_push_from_ffmpeg_to_the_listener(config: Config, stages: Stages) -> None:
    ffmpeg = _ffmpeg()
    port = _free_port()
    url = f"rtmp://127.0.0.1:{port}/live/test"

    async def main() -> tuple[list[dict[str, Any]], int, int, float]:
        executor = ThreadPoolExecutor(1)
        session = LiveSession(config, stages, executor, "RTMP test")
        sink = Sink()
        session.subscribe(Subscriber(sink.send, "viewer", limit=4096))
        source = UrlSource(url, listen=True, audio=True)
        await session.attach(source)
        t0 = time.perf_counter()
        tries = 0
        push: asyncio.subprocess.Process | None = None
        # The listener's socket opens in PyAV's thread: retry the push until it connects.
        while push is None or push.returncode not in (0, None):
            tries += 1
            assert tries < 400, "ffmpeg never reached the RTMP listener"
            push = await asyncio.create_subprocess_exec(
                ffmpeg, "-v", "error", "-re", "-i", str(CLIP), *ENCODE, "-c:a", "aac",
                "-f", "flv", url,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            first = asyncio.ensure_future(sink.until(lambda ev: len(_faces(ev)) >= 1, 60))
            done, _ = await asyncio.wait({first, asyncio.ensure_future(push.wait())},
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if first in done:
                break
            first.cancel()
        latency = time.perf_counter() - t0
        await sink.until(lambda ev: len(_faces(ev)) >= 10, 60)
        await push.wait()
        await session.close("test done")
        executor.shutdown()
        return sink.events, tries, source.opened, latency

    events, tries, opened, latency = asyncio.run(main())
    faces = _faces(events)
    prosody = [e for e in events if e["type"] == "prosody"]
    print(
        f"RTMP push: {tries} ffmpeg start(s), first face {latency:.2f} s after the listener "
        f"started; {len(faces)} frames with faces, {len(prosody)} prosody events"
    )
    assert opened == 1
    assert {f["faces"][0]["name"] for f in faces} == {"Face 1"}
    assert faces[-1]["width"] == 640 and faces[-1]["height"] == 360
    assert events[-1]["type"] == "session.ended"
    assert events[-2]["type"] == "session.summary" and events[-2]["faces"]
    assert prosody, "the pushed audio is analysed as a voice"


@pytest.mark.integration
def test_http_mpegts_drops_and_comes_back(config: Config, stages: Stages) -> None:
    ffmpeg = _ffmpeg()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/live.ts"

    async def serve_once() -> asyncio.subprocess.Process:
        """ffmpeg as a one-client HTTP server of a live MPEG-TS stream (the clip, in real time)."""
        return await asyncio.create_subprocess_exec(
            ffmpeg, "-v", "error", "-re", "-i", str(CLIP), *ENCODE, "-an",
            "-f", "mpegts", "-listen", "1", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def main() -> tuple[list[dict[str, Any]], int, int, float]:
        executor = ThreadPoolExecutor(1)
        cfg = config.replace("audio", enabled=False)
        session = LiveSession(cfg, stages, executor, "HTTP test")
        sink = Sink()
        session.subscribe(Subscriber(sink.send, "viewer", limit=4096))
        source = UrlSource(url, audio=False, retry_max_s=1.0)
        await session.attach(source)  # connection refused until ffmpeg listens: retried
        first = await serve_once()
        await sink.until(lambda ev: len(_faces(ev)) >= 5, 60)
        await first.wait()  # the clip is over: the stream drops
        await sink.until(lambda ev: any(e.get("code") == "source_lost" for e in ev), 30)
        lost_at = next(i for i, e in enumerate(sink.events) if e.get("code") == "source_lost")
        t_lost = time.perf_counter()
        second = await serve_once()  # ...and comes back
        await sink.until(lambda ev: len(_faces(ev[lost_at:])) >= 5, 60)
        back = time.perf_counter() - t_lost
        await second.wait()
        await session.close("test done")
        source.stop()
        executor.shutdown()
        return sink.events, lost_at, source.opened, back

    events, lost_at, opened, back = asyncio.run(main())
    before, after = _faces(events[:lost_at]), _faces(events[lost_at:])
    lost = [e for e in events if e.get("code") == "source_lost"]
    print(
        f"HTTP MPEG-TS: {len(before)} frames with faces, drop ({lost[0]['message']!r}), "
        f"{len(after)} after it; back {back:.2f} s after restarting the server; {opened} opens"
    )
    assert opened >= 2 and len(lost) == 1
    assert len(before) >= 5 and len(after) >= 5
    # One person across the outage, and media time keeps going forward.
    assert {f["faces"][0]["name"] for f in before + after} == {"Face 1"}
    times = [e["media_t"] for e in events if e["type"] == "frame"]
    assert times == sorted(times) and after[0]["media_t"] > before[-1]["media_t"]


SECRET_URLS = [  # nothing listens on port 9: each fails at once with FFmpeg's message
    ("rtsp://alice:S3CRETPW@127.0.0.1:9/stream1", ("alice", "S3CRETPW")),
    ("http://bob:pw@127.0.0.1:9/live/index.m3u8?token=T0KEN42", ("bob:pw", "T0KEN42")),
    ("rtmp://127.0.0.1:9/live/STREAMKEY123", ("STREAMKEY123",)),
]


def test_redact_hides_rtmp_stream_keys_and_scrub_cleans_messages() -> None:
    assert redact("rtmp://127.0.0.1:1935/live/KEY99") == "rtmp://127.0.0.1:1935/live/***"
    assert redact("rtmp://0.0.0.0:1935/live") == "rtmp://0.0.0.0:1935/live"
    url = "http://bob:p%40ss@cam:80/x.m3u8?token=a%2Bb#frag"
    msg = f"Server returned 401: '{url}' (user bob, password p@ss, token a+b)"
    assert scrub(msg, url) == (
        "Server returned 401: 'http://cam:80/x.m3u8' (user ***, password ***, token ***)"
    )
    assert scrub("No such file: '/tmp/a.mp4'", "/tmp/a.mp4") == "No such file: '/tmp/a.mp4'"


@pytest.mark.parametrize(("url", "secrets"), SECRET_URLS)
def test_watch_never_shows_url_secrets(
    url: str,
    secrets: tuple[str, ...],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FFmpeg's error messages quote the URL: stderr, logs, the source_unavailable event and
    the --events file (what viewers and the wall get) show it redacted."""
    from stream.analysis.fakes import FakeStages
    from stream.core.config import load_config
    from stream.live import url as url_module

    from .conftest import ROOT

    class Probe(UrlSource):
        reported: asyncio.Event | None = None

        def _status(self, code: str, message: str) -> None:
            super()._status(code, message)
            loop, seen = self._loop, Probe.reported
            if loop is not None and seen is not None:
                loop.call_soon_threadsafe(seen.set)

    monkeypatch.setattr(url_module, "UrlSource", Probe)
    cfg = load_config(ROOT / "configs" / "default.toml", env={}).replace("live", port=0)
    events = tmp_path / "events.jsonl"

    async def main() -> None:
        Probe.reported, stop = asyncio.Event(), asyncio.Event()

        async def stopper() -> None:
            assert Probe.reported is not None
            await Probe.reported.wait()
            stop.set()

        task = asyncio.ensure_future(stopper())
        await url_module.run_watch(
            cfg, url, "probe", events=events, stages=FakeStages(cfg), retry_max_s=60, stop=stop
        )
        await task

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    out, err = capsys.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    lines = events.read_text(encoding="utf-8")
    errors = [e for e in map(json.loads, lines.splitlines()) if e["type"] == "error"]
    print(errors)
    assert errors and errors[0]["code"] == "source_unavailable"
    assert redact(url) in errors[0]["message"]
    for secret in secrets:  # each used to be in the message (PyAV quotes the URL)
        for where, text in (("stdout", out), ("stderr", err), ("log", logs), ("events", lines)):
            assert secret not in text, (where, secret, text)


@pytest.mark.parametrize("kind", ["empty", "missing", "folder"])
def test_watch_on_a_bad_path_is_a_one_line_error_with_exit_3(
    kind: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import main

    path = tmp_path / "clip.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    code = main(["watch", str(path), "--purpose", "probe", "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    print(kind, code, err)
    assert code == 3 and len(err) == 1 and err[0].startswith("emotion-stream: error: ")


def test_watch_on_a_device_without_media_exits_3_instead_of_retrying() -> None:
    """/dev/null opens but holds no media: a MediaError (exit 3); it used to reconnect forever."""
    from stream.analysis.fakes import FakeStages
    from stream.core.config import load_config
    from stream.core.errors import MediaError
    from stream.live.url import run_watch

    from .conftest import ROOT

    cfg = load_config(ROOT / "configs" / "default.toml", env={}).replace("live", port=0)
    with pytest.raises(MediaError) as err:
        asyncio.run(run_watch(cfg, "/dev/null", "probe", stages=FakeStages(cfg)))
    print(err.value)
    assert str(err.value).startswith("cannot read /dev/null") and err.value.exit_code == 3


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_watch_on_an_unreadable_file_raises_media_error(kind: str, tmp_path: Any) -> None:
    """A local file that cannot be decoded ends the session and exits 3 (was exit 0)."""
    from stream.analysis.fakes import FakeStages
    from stream.core.config import load_config
    from stream.core.errors import MediaError
    from stream.live.url import run_watch

    from .conftest import ROOT

    path = tmp_path / "clip.mp4"
    if kind == "garbage":
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    else:
        if not CLIP.is_file():
            pytest.skip(f"{CLIP} missing")
        path.write_bytes(CLIP.read_bytes()[:3000])  # the head of an MP4 without its frames
    cfg = load_config(ROOT / "configs" / "default.toml", env={}).replace("live", port=0)
    with pytest.raises(MediaError) as err:
        asyncio.run(run_watch(cfg, str(path), "probe", stages=FakeStages(cfg)))
    print(err.value)
    assert str(path) in str(err.value) and err.value.exit_code == 3
