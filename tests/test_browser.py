"""End to end in a real browser: Debian's Chromium, headless, a clip as its fake camera.

Drives the page over the DevTools protocol (no test-tool browser downloads): consent, camera and
microphone (a speech file), WebRTC to the server, the overlay showing a face ID and the speaker
strip showing pitch; saves screenshots of the publisher page and of the read-only viewer page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
import websockets

from stream.core.config import Config
from stream.live.server import LiveServer
from stream.models.runtime import SessionFactory

from .conftest import MEDIA, ROOT, VIDEO

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
ARTIFACTS = ROOT / "test-artifacts"
SPEECH = MEDIA / "audio" / "librosa_libri_198-209-0000.wav"  # the fake microphone
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
]


def _require_chromium() -> None:
    if not Path(CHROMIUM).is_file():
        msg = f"Chromium not found at {CHROMIUM} (apt-get install chromium; or set CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs it: a missing browser there is a real failure
        pytest.skip(msg)


def make_y4m(src: Path, dst: Path, seconds: float = 3.0) -> None:
    """Convert a clip to the raw .y4m Chromium plays as a fake camera (looped)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        vs = inp.streams.video[0]
        o = out.add_stream("rawvideo", rate=30)
        o.width, o.height, o.pix_fmt = 640, 360, "yuv420p"
        o.time_base = Fraction(1, 30)
        for i, frame in enumerate(inp.decode(vs)):
            if i >= seconds * 30:
                break
            f = frame.reformat(640, 360, "yuv420p")
            f.pts = i
            for pkt in o.encode(f):
                out.mux(pkt)
        for pkt in o.encode():
            out.mux(pkt)


class DevTools:
    """A minimal Chrome DevTools Protocol client over one browser WebSocket (flat sessions)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                fut = self.pending.pop(msg.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def open(self, url: str) -> str:
        """Open a tab, navigate it to `url` and wait for its load event."""
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        session = str(attached["sessionId"])
        await self.call("Page.navigate", session, url=url)  # returns once the page commits
        await self.js(session, LOADED)
        return session

    async def js(self, session: str, expr: str) -> Any:
        r = await self.call(
            "Runtime.evaluate", session, expression=expr, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def screenshot(self, session: str, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", session, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


LOADED = """new Promise(r => document.readyState === 'complete' ? r(true)
    : addEventListener('load', () => r(true)))"""
WAIT_FACE = """new Promise((resolve, reject) => {
  const t0 = Date.now();
  (function poll() {
    const o = window.emotionStream && window.emotionStream.overlay;
    const f = o && o.lastFrame && o.lastFrame.faces.find(f => !f.excluded);
    const card = f && document.querySelector(`[data-face="${f.id}"] .name`);
    if (f && card) resolve({id: f.id, name: f.name, label: f.label, card: card.textContent,
                            status: document.getElementById('status').textContent});
    else if (Date.now() - t0 > 45000) reject(new Error('no face in 45 s: ' +
        document.getElementById('status').textContent));
    else setTimeout(poll, 100);
  })();
})"""


WAIT_VOICE = """new Promise((resolve, reject) => {
  const t0 = Date.now();
  (function poll() {
    const el = document.querySelector('.speaker');
    const pv = el && el.querySelector('.pv').textContent;
    if (el && pv && pv !== '–') resolve(el.innerText);
    else if (Date.now() - t0 > 30000) reject(new Error('no prosody in 30 s'));
    else setTimeout(poll, 100);
  })();
})"""


def test_browser_consent_camera_overlay_and_viewer(
    config: Config, factory: SessionFactory, tmp_path: Path
) -> None:
    _require_chromium()
    y4m = tmp_path / "camera.y4m"
    make_y4m(VIDEO / "pyfeat_single_face.mp4", y4m)
    ARTIFACTS.mkdir(exist_ok=True)

    async def main() -> tuple[dict[str, Any], dict[str, Any], bool, str]:
        server = LiveServer(config.replace("live", port=0), factory)
        await server.start()
        profile = tmp_path / "profile"
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--use-file-for-fake-video-capture={y4m}",
            f"--use-file-for-fake-audio-capture={SPEECH}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(30):
                while True:
                    line = (await proc.stderr.readline()).decode()
                    if not line:
                        raise RuntimeError("Chromium exited before DevTools was ready")
                    if "DevTools listening on " in line:
                        browser_ws = line.split("DevTools listening on ", 1)[1].strip()
                        break
            drain = asyncio.ensure_future(proc.stderr.read())  # keep the pipe from filling
            async with websockets.connect(browser_ws, max_size=2**26) as ws:
                cdp = DevTools(ws)
                page = await cdp.open(f"http://127.0.0.1:{server.port}/")
                # Nothing may be sent before consent: no session exists yet.
                before = len(server.sessions) == 0 and await cdp.js(
                    page, "document.getElementById('start').disabled"
                )
                await cdp.js(
                    page,
                    "document.getElementById('consent-check').click();"
                    "document.getElementById('start').click(); true",
                )
                face = await cdp.js(page, WAIT_FACE)
                voice = await cdp.js(page, WAIT_VOICE)
                await cdp.screenshot(page, ARTIFACTS / "browser-publisher.png")
                link = await cdp.js(page, "document.querySelector('#share a').href")
                viewer = await cdp.open(link)
                seen = await cdp.js(viewer, WAIT_FACE)
                await cdp.screenshot(viewer, ARTIFACTS / "browser-viewer.png")
                with contextlib.suppress(Exception):
                    await cdp.call("Browser.close")
                cdp.reader.cancel()
            drain.cancel()
            return face, seen, bool(before), voice
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            await server.shutdown()
            shutil.rmtree(profile, ignore_errors=True)

    face, seen, consent_first, voice = asyncio.run(main())
    print(f"browser: publisher overlay {face}; viewer {seen}; voice strip {voice!r}")
    print(f"screenshots in {ARTIFACTS}")
    assert "speaking" in voice and "Hz" in voice
    assert consent_first
    assert face["id"] == 1 and face["card"] == "Face 1" and face["status"] == "live"
    assert seen["id"] == 1
    assert (ARTIFACTS / "browser-publisher.png").stat().st_size > 10_000
