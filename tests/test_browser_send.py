"""Publishers send only what the server analyses: the page, measured in a real browser, and
the Python client (`stream.client`, frames dropped and scaled before aiortc encodes them).

Headless Chromium (Debian's) with a 30 fps fake camera (synthetic faces, 640x480) publishes to a
server on fake stages that asks, in `session.started`, for at most 10 frames per second with
the longer side at most 320 pixels (both not the defaults, so a page that ignored them would
send 30 fps at 640x480 and fail). The page's own `RTCPeerConnection.getStats()` says what the
encoder sent over a window; the server's frame events say what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import jsonschema
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream import client
from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.client import parse_event
from stream.core.config import Config, load_config
from stream.core.errors import ConfigError
from stream.live.events import SessionStarted, schema
from stream.live.server import LiveServer
from stream.live.testing import run_session

from .conftest import ROOT
from .test_browser import _require_chromium, chromium

VALIDATOR = jsonschema.Draft202012Validator(schema())
CAMERA_FPS = 30
CAMERA = (640, 480)
MAX_FPS = 10.0
MOUTH_FPS = 15.0  # with a microphone, frames are analysed at audio.mouth_fps (voice matching)
MAX_SIDE = 320

#: Waits until the page sends video, then reads the sender's statistics over a 4 s window
#: (2 s after the first frame, when the limits are applied and the rate has settled).
MEASURE = """(async () => {
  const t0 = Date.now();
  const snap = async () => {
    const es = window.emotionStream;
    const out = {t: Date.now(), received: es.overlay.lastFrame
      ? es.overlay.lastFrame.metrics.received_frames : null};
    (await es.pc.getStats()).forEach(s => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') out.rtp = s;
      if (s.type === 'media-source' && s.kind === 'video') out.source = s;
    });
    return out;
  };
  const pause = ms => new Promise(r => setTimeout(r, ms));
  const ready = () => window.emotionStream && window.emotionStream.pc
    && window.emotionStream.overlay.lastFrame;
  while (!ready()) {
    if (Date.now() - t0 > 45000) throw new Error('no frame event in 45 s: ' +
        document.getElementById('status').textContent + ' ' + JSON.stringify(await snap()));
    await pause(100);
  }
  await pause(2000);
  const a = await snap();
  await pause(4000);
  const b = await snap();
  const track = window.emotionStream.pc.getSenders().find(s => s.track && s.track.kind === 'video');
  return {a, b, settings: track.track.getSettings(),
          shown: document.getElementById('sending').textContent,
          encoding: track.getParameters().encodings[0]};
})()"""


def moving_faces(i: int) -> list[FakeFace]:
    """Two synthetic people; one drifts a few pixels per frame, so every frame is new."""
    dx = (i % 30) * 2
    return [FakeFace(0, (80 + dx, 120, 240 + dx, 320)), FakeFace(1, (380, 140, 540, 340))]


def write_camera(dst: Path, seconds: float = 2.0) -> None:
    """A 30 fps .y4m (looped by Chromium's fake camera) of synthetic faces."""
    w, h = CAMERA
    frames = fake_frames(round(seconds * CAMERA_FPS), moving_faces, CAMERA_FPS, (w, h))
    with av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        o = out.add_stream("rawvideo", rate=CAMERA_FPS)
        o.width, o.height, o.pix_fmt = w, h, "yuv420p"
        o.time_base = Fraction(1, CAMERA_FPS)
        for i, fr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr.image), format="bgr24")
            f = f.reformat(format="yuv420p")
            f.pts = i
            for pkt in o.encode(f):
                out.mux(pkt)
        for pkt in o.encode():
            out.mux(pkt)


@pytest.fixture(scope="module")
def cfg() -> Config:
    """Default configuration (the fakes ignore model names), asking for 10 fps at 320 px."""
    c = load_config(ROOT / "configs" / "default.toml", env={}).replace("audio", enabled=False)
    return c.replace("live", port=0, max_fps=MAX_FPS, send_max_side=MAX_SIDE)


def test_started_event_tells_publishers_what_to_send(cfg: Config) -> None:
    default = load_config(ROOT / "configs" / "default.toml", env={})
    assert default.live.send_max_side == 0  # 0: the detector's working size
    with pytest.raises(ConfigError, match=r"live\.send_max_side"):
        default.replace("live", send_max_side=10)
    frames = fake_frames(5, moving_faces(0), size=CAMERA)
    assert (default.live.max_fps, default.audio.mouth_fps) == (15.0, 25.0)
    for c, side in ((cfg, MAX_SIDE), (default, default.detection.max_side)):
        events, viewers = asyncio.run(run_session(FakeStages(c), frames, viewers=1))
        for ev in (events[0], viewers[0][0]):
            VALIDATOR.validate(ev)
        started = events[0]
        assert started["type"] == "session.started" and started["role"] == "publisher"
        with_audio = max(c.live.max_fps, c.audio.mouth_fps) if c.audio.enabled else MAX_FPS
        want = {"max_fps": c.live.max_fps, "max_fps_with_audio": with_audio, "max_side": side}
        assert started["send"] == want
        assert viewers[0][0]["role"] == "viewer" and "send" not in viewers[0][0]
        parsed = parse_event(started)
        assert isinstance(parsed, SessionStarted) and parsed.send == started["send"]


@pytest.mark.parametrize("microphone", [False, True])
def test_page_sends_at_the_analysed_rate_and_size(
    cfg: Config, tmp_path: Path, microphone: bool
) -> None:
    """Without audio analysis the page sends at most live.max_fps (10); with it (Chromium's
    fake microphone, a beep) at most max_fps_with_audio (audio.mouth_fps, 15)."""
    _require_chromium()
    if microphone:
        cfg = cfg.replace("audio", enabled=True, mouth_fps=MOUTH_FPS)
    fps = MOUTH_FPS if microphone else MAX_FPS
    y4m = tmp_path / "camera.y4m"
    write_camera(y4m)

    async def main() -> dict[str, Any]:
        server = LiveServer(cfg, stages=FakeStages(cfg))
        await server.start()
        try:
            camera = (f"--use-file-for-fake-video-capture={y4m}",)
            async with chromium(tmp_path / "profile", *camera) as cdp:
                page = await cdp.open(f"http://127.0.0.1:{server.port}/")
                await cdp.js(
                    page,
                    "document.getElementById('consent-check').click();"
                    "document.getElementById('start').click(); true",
                )
                got: dict[str, Any] = await cdp.js(page, MEASURE)
                return got
        finally:
            await server.shutdown()

    got = asyncio.run(main())
    a, b = got["a"], got["b"]
    rtp, src = b["rtp"], b.get("source", {})
    window_s = (b["rtp"]["timestamp"] - a["rtp"]["timestamp"]) / 1000
    sent_fps = (rtp["framesSent"] - a["rtp"]["framesSent"]) / window_s
    kbits = (rtp["bytesSent"] - a["rtp"]["bytesSent"]) * 8 / 1e3 / window_s
    received_fps = (b["received"] - a["received"]) / ((b["t"] - a["t"]) / 1000)
    print(
        f"\npage send ({'with' if microphone else 'without'} audio): camera {CAMERA[0]}x"
        f"{CAMERA[1]} @ {CAMERA_FPS} fps, asked for <= {fps:g}"
        f" fps, longer side <= {MAX_SIDE}; track now {got['settings'].get('width')}x"
        f"{got['settings'].get('height')} @ {got['settings'].get('frameRate')}, source "
        f"{src.get('framesPerSecond')} fps; encoding {got['encoding']}\n"
        f"  sent over {window_s:.1f} s: {sent_fps:.1f} fps (framesPerSecond "
        f"{rtp.get('framesPerSecond')}), {rtp['frameWidth']}x{rtp['frameHeight']}, "
        f"{kbits:.0f} kbit/s; "
        f"server received {received_fps:.1f} fps; the page says {got['shown']!r}"
    )
    size = (MAX_SIDE, MAX_SIDE * CAMERA[1] // CAMERA[0])  # the camera's shape, scaled down
    assert got["shown"].startswith(f"Sending {size[0]}×{size[1]} at up to {fps:g} fps")
    assert (rtp["frameWidth"], rtp["frameHeight"]) == size
    assert sent_fps <= fps * 1.1 + 0.5, sent_fps
    assert rtp.get("framesPerSecond", 0) <= fps + 1
    assert received_fps <= fps * 1.1 + 0.5, received_fps
    assert sent_fps >= 0.5 * fps, sent_fps  # at the analysed rate, not starved


class InstantCamera(MediaStreamTrack):
    """`n` frames of `size` at `fps` media time, as fast as they are read (no pacing)."""

    kind = "video"

    def __init__(self, n: int, fps: int, size: tuple[int, int] = CAMERA) -> None:
        super().__init__()
        self.frames = fake_frames(n, moving_faces, fps, size)
        self.fps = fps
        self.i = 0

    async def recv(self) -> av.VideoFrame:
        if self.i >= len(self.frames):
            self.stop()
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(self.frames[self.i].image, format="bgr24")
        frame.pts, frame.time_base = self.i, Fraction(1, self.fps)
        self.i += 1
        return frame


def test_client_send_limit_drops_and_scales_frames() -> None:
    async def read(track: client.SendLimit, n: int | None = None) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        with contextlib.suppress(MediaStreamError):
            while n is None or len(out) < n:
                out.append(await track.recv())
        return out

    async def main() -> dict[int, list[av.VideoFrame]]:
        got = {}
        for fps in (30, 25, 8):
            track = client.SendLimit(InstantCamera(3 * fps + 3, fps))
            first = await read(track, 3)  # before the server said: every frame
            assert [f.pts for f in first] == [0, 1, 2] and first[0].width == CAMERA[0]
            track.limit({"max_fps": MAX_FPS, "max_side": MAX_SIDE})
            got[fps] = await read(track)
            assert track.readyState == "ended"  # the source ended: so did the limit
            assert track.passed == 3 + len(got[fps]) and track.dropped == 3 * fps - len(got[fps])
        return got

    got = asyncio.run(main())
    for fps, frames in got.items():
        times = [float(f.time) for f in frames]
        print(f"client limit: {fps} fps source -> {len(frames)} frames in 3 s, first {times[:5]}")
        assert len(frames) == 3 * min(fps, MAX_FPS)  # evenly: 10 a second, also from 25 fps
        assert all(b - a < 2.01 / min(fps, MAX_FPS) for a, b in itertools.pairwise(times))
        assert {(f.width, f.height) for f in frames} == {(MAX_SIDE, MAX_SIDE * 3 // 4)}
    track = client.SendLimit(InstantCamera(1, 30))
    track.limit({"max_fps": 10, "max_fps_with_audio": 25, "max_side": 320}, with_audio=True)
    assert track.max_fps == 25
    track.limit({"max_fps": 10, "max_fps_with_audio": 25, "max_side": 320})
    assert track.max_fps == 10
    with pytest.raises(client.LiveError, match="impossible"):
        client.SendLimit(InstantCamera(1, 30)).limit({"max_fps": 0, "max_side": 320})


def test_client_publishes_at_the_analysed_rate_and_size(cfg: Config) -> None:
    """`stream.client.publish` of a 30 fps source to a server asking for 10 fps at 320 px."""
    seconds = 3.0
    frames = [(f.image, f.t) for f in fake_frames(round(seconds * 30), moving_faces, 30, CAMERA)]

    async def main() -> tuple[list[client.Event], client.SendLimit]:
        server = LiveServer(cfg, stages=FakeStages(cfg))
        await server.start()
        events: list[client.Event] = []
        try:
            async with asyncio.timeout(60):
                url = f"http://127.0.0.1:{server.port}/"
                async with client.connect(url, frames, purpose="send limits") as pub:
                    async for ev in pub.events():
                        events.append(ev)
        finally:
            await server.shutdown()
        return events, pub.limits[0]

    events, limit = asyncio.run(main())
    analysed = [e for e in events if isinstance(e, client.Frame)]
    received = max(e.metrics["received_frames"] for e in analysed)
    sizes = {(e.width, e.height) for e in analysed}
    print(
        f"client publish: 30 fps {CAMERA[0]}x{CAMERA[1]} source for {seconds:g} s -> passed "
        f"{limit.passed}, dropped {limit.dropped}; server received {received} frames, sizes {sizes}"
    )
    assert limit.passed <= seconds * MAX_FPS + 1 and limit.dropped >= seconds * 30 * 0.6
    assert received <= seconds * MAX_FPS + 1 and sizes == {(MAX_SIDE, MAX_SIDE * 3 // 4)}
