"""End to end in a real browser: Debian's Chromium, headless, a clip as its fake camera.

Drives the page over the DevTools protocol (no test-tool browser downloads): consent, camera (a
3x3 gallery of nine real faces) and microphone (a speech file), WebRTC to the server. At five
window sizes (laptops, a full-HD screen, a phone upright and on its side) the page must fit the
viewport: the whole video and every box on its face (checked against where that face is in the
camera frame), the notice visible, the side panel scrolling on its own, compact face rows that
open on a click. Also the speaker strip showing pitch and the read-only viewer. Saves a
screenshot of the publisher page at every size and of the viewer at two.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import websockets

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.live.server import LiveServer

from .conftest import MEDIA, ROOT, imread

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


WAIT_GALLERY = """new Promise((resolve, reject) => {
  const t0 = Date.now();
  const seq0 = window.__seq0 ?? -1;
  (function poll() {
    const o = window.emotionStream && window.emotionStream.overlay;
    const ev = o && o.lastFrame;
    const faces = ev ? ev.faces.filter(f => !f.excluded) : [];
    const cards = [...document.querySelectorAll('#faces [data-face]')];
    const rects = window.__overlayRects || [];
    if (ev && ev.seq > seq0 && faces.length >= %d && rects.length === ev.faces.length
        && cards.length >= %d) {
      requestAnimationFrame(() => requestAnimationFrame(() => {
        o.draw();  // the newest layout, then read back what was drawn where
        const v = document.getElementById('video'), c = document.getElementById('overlay');
        const vr = v.getBoundingClientRect(), cr = c.getBoundingClientRect();
        const page = r => ({x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height});
        const box = sel => page(document.querySelector(sel).getBoundingClientRect());
        const aside = document.querySelector('aside');
        resolve({
          notice: box('.notice'), aside: box('aside'), stage: box('.stage'),
          asideScroll: [aside.scrollHeight, aside.clientHeight, getComputedStyle(aside).overflowY],
          pageSize: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
          cardHeights: cards.map(el => el.getBoundingClientRect().height),
          noticeText: document.querySelector('.notice').textContent,
          rects: window.__overlayRects, drawnFrame: window.__overlayVideoRect,
          boxes: o.lastFrame.faces.map(f => ({id: f.id, box: f.box})),
          video: page(vr), canvas: page(cr), fit: getComputedStyle(v).objectFit,
          videoSize: [v.videoWidth, v.videoHeight], clientSize: [v.clientWidth, v.clientHeight],
          canvasPx: [c.width, c.height], dpr: devicePixelRatio, inner: [innerWidth, innerHeight],
          cards: cards.map(el => Number(el.dataset.face)),
          dominant: cards.map(el => el.querySelector('.dominant').textContent),
          metrics: document.getElementById('metrics').textContent,
          status: document.getElementById('status').textContent});
      }));
    } else if (Date.now() - t0 > 60000) reject(new Error('not all faces in 60 s: ' +
        faces.length + ' faces; ' + document.getElementById('status').textContent));
    else setTimeout(poll, 100);
  })();
})"""

#: Nine people (identity photos), one per tile of a 3x3 gallery view, at different sizes and
#: positions in their tiles so that a wrong scale or offset cannot land on the right spot.
GALLERY = [
    ("face_recognition/obama.jpg", 0.62, (0.45, 0.50)),
    ("face_recognition/biden.jpg", 0.50, (0.60, 0.55)),
    ("openface/adams.jpg", 0.70, (0.50, 0.45)),
    ("openface/carell.jpg", 0.45, (0.40, 0.55)),
    ("faceapijs/bbt_amy1.png", 0.60, (0.55, 0.50)),
    ("faceapijs/bbt_howard1.png", 0.55, (0.45, 0.55)),
    ("faceapijs/bbt_leonard1.png", 0.65, (0.50, 0.50)),
    ("faceapijs/bbt_penny1.png", 0.50, (0.58, 0.48)),
    ("faceapijs/bbt_raj1.png", 0.60, (0.42, 0.52)),
]
GRID = 3
FRAME_W, FRAME_H = 960, 720
#: (viewport width, height, device pixel ratio, mobile): laptops, a full-HD screen, a phone
#: upright and on its side.
SIZES = [
    (1280, 800, 1.0, False),
    (1440, 900, 1.0, False),
    (1920, 1080, 1.0, False),
    (390, 844, 3.0, True),
    (844, 390, 3.0, True),
]


@contextlib.asynccontextmanager
async def chromium(profile: Path, *flags: str) -> AsyncIterator[DevTools]:
    """Headless Chromium (Debian's) with extra `flags`, driven over DevTools; killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *flags,
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
        try:
            async with websockets.connect(browser_ws, max_size=2**26) as ws:
                cdp = DevTools(ws)
                try:
                    yield cdp
                finally:
                    with contextlib.suppress(Exception):
                        await cdp.call("Browser.close")
                    cdp.reader.cancel()
        finally:
            drain.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def gallery_frame(stages: Stages) -> tuple[np.ndarray, np.ndarray]:
    """A 960x720 3x3 gallery frame and the faces' boxes in it, normalised (x1, y1, x2, y2).

    Each tile is cut from a photo so that the face is `size` of the tile's height, centred at
    `centre` (fractions of the tile); the boxes come from the detector run on the composed frame.
    """
    det = stages.vision_models.detector
    tw, th = FRAME_W // GRID, FRAME_H // GRID
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    for i, (name, size, (cx, cy)) in enumerate(GALLERY):
        img = imread(MEDIA / "identities" / name)
        found = det(VideoFrame(img, 0.0))
        assert len(found.boxes) == 1, name
        x1, y1, x2, y2 = found.boxes[0]
        s = (y2 - y1) / (size * th)  # source pixels per tile pixel
        fx, fy = (x1 + x2) / 2 - cx * tw * s, (y1 + y2) / 2 - cy * th * s
        m = np.array([[1 / s, 0, -fx / s], [0, 1 / s, -fy / s]], np.float32)
        tile = cv2.warpAffine(img, m, (tw, th), flags=cv2.INTER_AREA, borderValue=(40, 40, 40))
        r, c = divmod(i, GRID)
        frame[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    found = det(VideoFrame(frame, 0.0))
    assert len(found.boxes) == len(GALLERY), found.boxes
    boxes = found.boxes / np.array([FRAME_W, FRAME_H, FRAME_W, FRAME_H], np.float32)
    return frame, boxes


def write_y4m(frame: np.ndarray, dst: Path, n: int = 30) -> None:
    """A still frame as n frames of the raw .y4m Chromium plays as a fake camera (looped)."""
    with av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        o = out.add_stream("rawvideo", rate=30)
        o.width, o.height, o.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        o.time_base = Fraction(1, 30)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")
            f.pts = i
            for pkt in o.encode(f):
                out.mux(pkt)
        for pkt in o.encode():
            out.mux(pkt)


OPEN_CARD = """new Promise(resolve => {
  const card = document.querySelector('#faces [data-face]');
  const before = card.getBoundingClientRect().height;
  card.querySelector('.row').click();
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const after = card.getBoundingClientRect().height;
    const details = getComputedStyle(card.querySelector('.details')).display !== 'none'
      && card.querySelector('.dominant').textContent.startsWith('dominant');
    const aside = document.querySelector('aside').getBoundingClientRect();
    resolve({before, after, details, asideBottom: aside.bottom,
             behaviour: card.querySelector('.behaviour').textContent,
             page: document.documentElement.scrollHeight});
  }));
})"""
CLOSE_CARD = """new Promise(resolve => {
  const card = document.querySelector('#faces [data-face]');
  card.querySelector('.row').click();
  requestAnimationFrame(() => resolve(card.getBoundingClientRect().height));
})"""
VIEWER_FIT = """new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(() => {
  window.emotionStream.overlay.draw();
  const st = document.querySelector('.stage').getBoundingClientRect();
  resolve({frame: window.__overlayVideoRect, rects: (window.__overlayRects || []).length,
    stage: {x: st.left, y: st.top, w: st.width, h: st.height},
    page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight]});
})))"""


def assert_fits(s: dict[str, Any], w: int, h: int) -> None:
    """The page fits a w x h viewport: no page scroll, the whole video with every box in view,
    the video using the space left, the notice in view, the side panel scrolling on its own
    beside the video (below it on an upright phone), compact face rows."""
    tol = 0.5
    assert s["pageSize"][0] <= w and s["pageSize"][1] <= h, ("page scrolls", s["pageSize"])
    fr = s["drawnFrame"]
    assert fr["x"] >= -tol and fr["y"] >= -tol, fr
    assert fr["x"] + fr["w"] <= w + tol and fr["y"] + fr["h"] <= h + tol, (fr, w, h)
    for r in s["rects"]:  # every box inside the painted frame, so on screen
        assert r["x"] >= fr["x"] - tol and r["y"] >= fr["y"] - tol, r
        assert r["x"] + r["w"] <= fr["x"] + fr["w"] + tol, r
        assert r["y"] + r["h"] <= fr["y"] + fr["h"] + tol, r
    st = s["stage"]  # the frame fills the stage in one direction (scaled to the space left)
    assert abs(fr["w"] - st["w"]) < 1.5 or abs(fr["h"] - st["h"]) < 1.5, (fr, st)
    n = s["notice"]
    assert n["h"] >= 8 and n["y"] >= 0 and n["y"] + n["h"] <= h and n["x"] + n["w"] <= w, n
    assert "not feelings" in s["noticeText"]
    a = s["aside"]
    assert a["y"] + a["h"] <= h + tol and a["x"] + a["w"] <= w + tol, a
    assert s["asideScroll"][2] == "auto"
    beside = a["x"] >= st["x"] + st["w"] - tol
    below = a["y"] >= st["y"] + st["h"] - tol
    assert beside or (below and h > w), (a, st)
    assert a["h"] >= 80, a  # room for a few rows
    assert max(s["cardHeights"]) <= 60, s["cardHeights"]  # compact rows until opened
    area = fr["w"] * fr["h"] / (w * h)
    print(f"  fits {w}x{h}: frame {fr['w']:.0f}x{fr['h']:.0f} ({100 * area:.0f}% of the "
          f"viewport), panel {a['w']:.0f}x{a['h']:.0f} {'beside' if beside else 'below'}, "
          f"notice {n['h']:.0f} px tall, rows {max(s['cardHeights']):.0f} px")  # fmt: skip


def contain(box: dict[str, float], fw: int, fh: int) -> tuple[float, float, float, float]:
    """Where object-fit: contain paints an fw x fh frame inside `box` (x, y, w, h)."""
    s = min(box["w"] / fw, box["h"] / fh)
    w, h = fw * s, fh * s
    return box["x"] + (box["w"] - w) / 2, box["y"] + (box["h"] - h) / 2, w, h


def geometry_errors(seen: dict[str, Any], truth: np.ndarray) -> dict[str, float]:
    """Errors (CSS px) between the boxes drawn on the page and the faces in the camera frame.

    `to_face`: each drawn box against the nearest face's true box (from the composed frame),
    mapped onto the page independently of the page's code (video element box + contain).
    `to_event`: drawn boxes against the frame events' boxes (the overlay's own mapping).
    `frame`: the overlay's idea of the painted frame against the independent one.
    """
    fw, fh = seen["videoSize"]
    assert seen["fit"] == "contain"
    # The video element's content box (clientWidth/Height excludes borders; there are none).
    vx, vy, vw, vh = contain(seen["video"], fw, fh)
    df = seen["drawnFrame"]
    frame_err = max(abs(df["x"] - vx), abs(df["y"] - vy), abs(df["w"] - vw), abs(df["h"] - vh))

    def page(b: Any) -> np.ndarray:
        return np.array([vx + b[0] * vw, vy + b[1] * vh, vx + b[2] * vw, vy + b[3] * vh])

    events = {b["id"]: page(b["box"]) for b in seen["boxes"]}
    truth_px = [page(b) for b in truth]
    to_face, to_event, matched = 0.0, 0.0, set()
    for r in seen["rects"]:
        drawn = np.array([r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]])
        errs = [float(np.abs(drawn - t).max()) for t in truth_px]
        k = int(np.argmin(errs))
        matched.add(k)
        to_face = max(to_face, errs[k])
        to_event = max(to_event, float(np.abs(drawn - events[r["id"]]).max()))
    return {
        "to_face": to_face,
        "to_event": to_event,
        "frame": frame_err,
        "faces_matched": float(len(matched)),
        "face_px": float(np.mean([t[3] - t[1] for t in truth_px])),
    }


@pytest.mark.integration
def test_browser_consent_gallery_overlay_geometry_and_viewer(
    config: Config, stages: Stages, tmp_path: Path
) -> None:
    _require_chromium()
    frame, truth = gallery_frame(stages)
    y4m = tmp_path / "camera.y4m"
    write_y4m(frame, y4m)
    ARTIFACTS.mkdir(exist_ok=True)
    n = len(GALLERY)
    sizes = SIZES

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any], bool, str, dict[str, Any]]:
        server = LiveServer(config.replace("live", port=0), stages.factory)
        await server.start()
        try:
            camera = (
                f"--use-file-for-fake-video-capture={y4m}",
                f"--use-file-for-fake-audio-capture={SPEECH}",
            )
            async with chromium(tmp_path / "profile", *camera) as cdp:
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
                seen = []
                for w, h, dpr, mobile in sizes:
                    await cdp.call(
                        "Emulation.setDeviceMetricsOverride",
                        page,
                        width=w,
                        height=h,
                        deviceScaleFactor=dpr,
                        mobile=mobile,
                    )
                    # Only a frame drawn after the resize counts.
                    await cdp.js(
                        page,
                        "window.__seq0 = (window.emotionStream && window.emotionStream.overlay"
                        ".lastFrame) ? window.emotionStream.overlay.lastFrame.seq : -1; true",
                    )
                    seen.append(await cdp.js(page, WAIT_GALLERY % (n, n)))
                    await cdp.screenshot(page, ARTIFACTS / f"browser-publisher-{w}x{h}.png")
                # A click on a face row opens its details (history, actions, buttons) in place.
                seen[-1]["opened"] = await cdp.js(page, OPEN_CARD)
                await cdp.screenshot(page, ARTIFACTS / "browser-publisher-opened.png")
                seen[-1]["opened"]["closed_again"] = await cdp.js(page, CLOSE_CARD)
                voice = await cdp.js(page, WAIT_VOICE)
                # The session's report so far, as the page's download links fetch it.
                report = await cdp.js(
                    page,
                    """Promise.all([...document.querySelectorAll('#reports a')].map(a =>
                      fetch(a.href).then(async r => ({href: a.href, status: r.status,
                        type: r.headers.get('content-type'),
                        disposition: r.headers.get('content-disposition'),
                        text: await r.text()}))))""",
                )
                link = await cdp.js(page, "document.querySelector('#share a').href")
                viewer = await cdp.open(link)
                viewed = await cdp.js(viewer, WAIT_FACE)
                viewed["frames"] = []
                for w, h, dpr, mobile in (sizes[0], sizes[3]):
                    await cdp.call(
                        "Emulation.setDeviceMetricsOverride",
                        viewer,
                        width=w,
                        height=h,
                        deviceScaleFactor=dpr,
                        mobile=mobile,
                    )
                    viewed["frames"].append(await cdp.js(viewer, VIEWER_FIT))
                    await cdp.screenshot(viewer, ARTIFACTS / f"browser-viewer-{w}x{h}.png")
            return (
                seen,
                viewed,
                bool(before),
                voice,
                {r["href"].split("?")[0].rsplit(".", 1)[1]: r for r in report},
            )
        finally:
            await server.shutdown()

    seen, viewed, consent_first, voice, got = asyncio.run(main())
    assert consent_first
    for (w, h, dpr, _), s in zip(sizes, seen, strict=True):
        err = geometry_errors(s, truth)
        print(
            f"browser {w}x{h} @{dpr:g}x: video {s['video']['w']:.0f}x{s['video']['h']:.0f} at "
            f"({s['video']['x']:.0f},{s['video']['y']:.0f}), canvas {s['canvas']['w']:.0f}x"
            f"{s['canvas']['h']:.0f} ({s['canvasPx'][0]}x{s['canvasPx'][1]} px); {len(s['rects'])}"
            f" boxes; max error to the faces {err['to_face']:.1f} px (faces ~{err['face_px']:.0f}"
            f" px tall), to the events' boxes {err['to_event']:.2f} px, frame {err['frame']:.2f} px"
        )
        print(f"  cards {s['cards']}: {s['dominant']}; {s['metrics']}")
        assert s["inner"] == [w, h] and s["dpr"] == dpr
        # The canvas covers the video element exactly, at the device's pixel density.
        for k in ("x", "y", "w", "h"):
            assert abs(s["canvas"][k] - s["video"][k]) < 1.0, (k, s["canvas"], s["video"])
        assert abs(s["canvasPx"][1] - s["video"]["h"] * dpr) <= 1.0
        assert err["frame"] < 1.0 and err["to_event"] < 1.0
        # Every face has its own box on it: edges within 10% of a face's height.
        assert err["faces_matched"] == n
        assert err["to_face"] < 0.1 * err["face_px"], err
        assert s["cards"] == sorted(s["cards"]) and len(s["cards"]) >= n
        assert "newest frame first" in s["metrics"] and "dropped" not in s["metrics"]
        assert_fits(s, w, h)
    opened = seen[-1]["opened"]
    print(f"  a click opens a face row: {opened}")
    assert opened["after"] > opened["before"] + 30 and opened["details"]
    assert "head yaw" in opened["behaviour"] and "looking" in opened["behaviour"], opened
    assert opened["closed_again"] == opened["before"]
    assert opened["asideBottom"] <= sizes[-1][1] + 0.5 and opened["page"] <= sizes[-1][1]
    print(f"browser: viewer {viewed}; voice strip {voice!r}")
    print(f"screenshots in {ARTIFACTS}")
    assert "speaking" in voice and "Hz" in voice
    assert viewed["id"] >= 1
    for (w, h, _, _), fit in zip((sizes[0], sizes[3]), viewed["frames"], strict=True):
        print(f"viewer {w}x{h}: {fit}")
        frame = fit["frame"]
        assert frame["w"] > 0.6 * min(w, fit["stage"]["w"]) or frame["h"] > 0.9 * fit["stage"]["h"]
        assert frame["x"] >= -0.5 and frame["y"] >= -0.5
        assert frame["x"] + frame["w"] <= w + 0.5 and frame["y"] + frame["h"] <= h + 0.5
        assert fit["page"][0] <= w and fit["page"][1] <= h
    # Reports download from the page while the session runs: the same writers as `analyze`.
    html, js = got["html"], got["json"]
    print(
        f"live report: html {len(html['text']) / 1e3:.0f} kB ({html['disposition']}), "
        f"json {len(js['text']) / 1e3:.1f} kB, csv {len(got['csv']['text'].splitlines())} rows"
    )
    assert html["status"] == 200 and "attachment" in html["disposition"]
    assert html["text"].count("<div class='card'>") >= n and "Over time" in html["text"]
    data = json.loads(js["text"])
    assert data["schema"] == "emotion-stream.analysis" and len(data["faces"]) >= n
    assert all("uncertain_share" in f["dominant"] for f in data["faces"])


WAIT_ACTIVATION = """new Promise((resolve, reject) => {
  const t0 = Date.now();
  (function poll() {
    const el = document.querySelector('.speaker');
    const av = el && el.querySelector('.av').textContent;
    const face = document.querySelector('#faces [data-face]');
    if (el && av && av !== '–' && face) resolve({text: el.innerText,
      face: Number(face.dataset.face), inFace: !!el.closest('[data-face]')});
    else if (Date.now() - t0 > 45000) reject(new Error('no activation in 45 s: ' +
        (el ? el.innerText : 'no speaker card')));
    else setTimeout(poll, 100);
  })();
})"""
#: The latest prosody event again, now saying its voice belongs to face `%d` (as the server's
#: mouth matching says once that face's mouth moves with the voice).
LINK_VOICE = """new Promise(resolve => {
  const o = window.emotionStream.overlay;
  const [id, sp] = [...o.speakers.entries()][0];
  o.handle({...sp.prosody, type: 'prosody', voice_face_id: %d});
  requestAnimationFrame(() => {
    const card = document.querySelector('#faces [data-face="%d"]');
    const voice = card.querySelector('.speaker');
    resolve({linked: !!voice, text: card.innerText,
      separate: document.querySelectorAll('#faces > .speaker').length});
  });
})"""


@pytest.mark.integration
def test_browser_voice_shows_estimated_vocal_activation_and_joins_its_face(
    config: Config, stages: Stages, tmp_path: Path
) -> None:
    """The voice card shows "estimated vocal activation" (never an emotion word) from real
    speech through the microphone; a voice linked to a face becomes part of that face's card."""
    _require_chromium()
    img = imread(MEDIA / "identities" / "face_recognition" / "obama.jpg")
    h, w = img.shape[:2]
    small = cv2.resize(img, (min(640, round(w * 480 / h)), 480), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 40, np.uint8)  # one face, centred, grey at the sides
    x = (640 - small.shape[1]) // 2
    frame[:, x : x + small.shape[1]] = small
    y4m = tmp_path / "camera.y4m"
    write_y4m(frame, y4m)
    ARTIFACTS.mkdir(exist_ok=True)

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        server = LiveServer(config.replace("live", port=0), stages.factory)
        await server.start()
        try:
            camera = (
                f"--use-file-for-fake-video-capture={y4m}",
                f"--use-file-for-fake-audio-capture={SPEECH}",
            )
            async with chromium(tmp_path / "profile", *camera) as cdp:
                page = await cdp.open(f"http://127.0.0.1:{server.port}/")
                await cdp.call(
                    "Emulation.setDeviceMetricsOverride",
                    page,
                    width=1280,
                    height=800,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                await cdp.js(
                    page,
                    "document.getElementById('consent-check').click();"
                    "document.getElementById('start').click(); true",
                )
                heard = await cdp.js(page, WAIT_ACTIVATION)
                await cdp.screenshot(page, ARTIFACTS / "browser-voice-activation-1280x800.png")
                face = int(heard["face"])
                linked = await cdp.js(page, LINK_VOICE % (face, face))
                await cdp.screenshot(page, ARTIFACTS / "browser-voice-linked-1280x800.png")
                return heard, linked
        finally:
            await server.shutdown()

    heard, linked = asyncio.run(main())
    print(f"browser voice card: {heard!r}\nlinked to its face: {linked!r}")
    text = heard["text"].lower()
    assert "estimated vocal activation" in text and "activation" in text
    emotions = ("anger", "angry", "happ", "sad", "fear", "disgust", "surprise", "contempt")
    assert not [w for w in emotions if w in text], text
    assert linked["linked"] and linked["separate"] == 0
    assert "estimated vocal activation" in linked["text"].lower()
