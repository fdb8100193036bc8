"""HTTPS and WHIP ingest: a self-signed certificate, printed URLs, an aiortc WHIP publisher and
Chromium over HTTPS (the page's own WebRTC and a WHIP publish from the page)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from stream.core.config import Config, WhipToken
from stream.live.server import LiveServer
from stream.live.session import Subscriber
from stream.live.tls import machine_addresses, make_self_signed, open_urls
from stream.models.runtime import SessionFactory

from .conftest import MEDIA, VIDEO, imread
from .live_client import player_tracks
from .test_browser import WAIT_FACE, _require_chromium, chromium, write_y4m

TOKEN = "test-token-0123456789abcdef"
CLIP = VIDEO / "pyfeat_single_face.mp4"


def _client_ssl() -> ssl.SSLContext:
    """Trust any certificate (self-signed): the test compares fingerprints itself."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes, str]:
    """One HTTPS request: status, headers (lower-case names), body, the server cert's SHA-256."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=_client_ssl(), timeout=30)
    try:
        conn.connect()
        assert isinstance(conn.sock, ssl.SSLSocket)
        cert = conn.sock.getpeercert(binary_form=True) or b""
        fp = ":".join(f"{b:02X}" for b in hashlib.sha256(cert).digest())
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), fp
    finally:
        conn.close()


def _server(config: Config, factory: SessionFactory, **live: Any) -> LiveServer:
    cfg = config.replace("live", port=0, tls_self_signed=True, **live)
    cfg = cfg.replace("whip", tokens=(WhipToken(TOKEN, "tests of WHIP ingest"),))
    return LiveServer(cfg, factory)


def test_urls_and_self_signed_certificate() -> None:
    addrs = machine_addresses()
    urls = open_urls("0.0.0.0", 8443, tls=True)
    print(f"machine addresses {addrs}; printed URLs {urls}")
    assert urls[0] == "https://localhost:8443/"
    assert urls[1:] == [f"https://{a}:8443/" for a in addrs]
    assert not any("0.0.0.0" in u for u in urls)
    assert open_urls("::1", 80, tls=False) == ["http://[::1]:80/"]
    assert open_urls("192.168.1.7", 8080, tls=True) == ["https://192.168.1.7:8080/"]
    from cryptography import x509

    cert_pem, key_pem = make_self_signed(["localhost", "10.1.2.3", "vm"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "vm"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 30 and b"PRIVATE KEY" in key_pem


async def _viewer_events(
    port: int,
    viewer_path: str,
    until: Any,
    timeout: float = 60.0,
    started: asyncio.Event | None = None,
) -> list[dict[str, Any]]:
    """A viewer over wss:// collecting events until `until(events)` holds (or the end);
    `started` is set at its first event (it is subscribed by then)."""
    events: list[dict[str, Any]] = []
    url = f"wss://127.0.0.1:{port}/ws/view?{viewer_path.split('?', 1)[1]}"
    async with websockets.connect(url, ssl=_client_ssl(), max_size=2**22) as ws:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                events.append(json.loads(raw))
                if started is not None:
                    started.set()
                if until(events):
                    break
    return events


@pytest.mark.integration
def test_whip_publisher_over_https(config: Config, factory: SessionFactory) -> None:
    async def main() -> dict[str, Any]:
        server = _server(config, factory, max_sessions=1)
        await server.start()
        assert server.tls is not None
        port, out = server.port, dict[str, Any]()
        try:
            # Preflight as a browser page of an allowed and of a foreign origin would send.
            own = f"https://127.0.0.1:{port}"
            pre = {"Origin": own, "Access-Control-Request-Method": "POST"}
            st, h, _, fp = await asyncio.to_thread(_request, port, "OPTIONS", "/whip", b"", pre)
            out["options"] = (st, h)
            out["fingerprint"] = (fp, server.tls.fingerprint)
            bad = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
            out["options_foreign"] = (
                await asyncio.to_thread(_request, port, "OPTIONS", "/whip", b"", bad)
            )[0]

            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            for track in player_tracks(CLIP, loop=True, audio=False):
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp.encode()
            sdp_h = {"Content-Type": "application/sdp"}
            auth = {**sdp_h, "Authorization": f"Bearer {TOKEN}"}
            out["no_token"] = (
                await asyncio.to_thread(_request, port, "POST", "/whip", offer, sdp_h)
            )[:2]
            wrong = {**sdp_h, "Authorization": "Bearer wrong-token-0123456789"}
            out["wrong_token"] = (
                await asyncio.to_thread(_request, port, "POST", "/whip", offer, wrong)
            )[0]
            plain = {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}
            out["wrong_type"] = (
                await asyncio.to_thread(_request, port, "POST", "/whip", offer, plain)
            )[0]
            t0 = time.perf_counter()
            st, h, body, _ = await asyncio.to_thread(_request, port, "POST", "/whip", offer, auth)
            out["post"] = (st, h, round(time.perf_counter() - t0, 3))
            await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
            # A second publisher over max_sessions = 1 is refused with Retry-After.
            st2, h2, _, _ = await asyncio.to_thread(_request, port, "POST", "/whip", offer, auth)
            out["full"] = (st2, h2.get("retry-after"))
            sid = h["location"].rsplit("/", 1)[1]
            session = server.sessions[sid]
            out["purpose"] = session.purpose

            def faces_seen(ev: list[dict[str, Any]]) -> bool:
                return sum(1 for e in ev if e["type"] == "frame" and e["faces"]) >= 10

            t1 = time.perf_counter()
            events = await _viewer_events(port, h["x-viewer"], faces_seen)
            out["first_faces_s"] = round(time.perf_counter() - t1, 2)
            out["events"] = events
            out["patch"] = (
                await asyncio.to_thread(_request, port, "PATCH", h["location"], b"", auth)
            )[0]
            other = {"Authorization": "Bearer wrong-token-0123456789"}
            out["delete_wrong"] = (
                await asyncio.to_thread(_request, port, "DELETE", h["location"], b"", other)
            )[0]

            # DELETE ends the session: its viewer gets the summary and the end event.
            subscribed = asyncio.Event()

            async def watch_end() -> list[dict[str, Any]]:
                return await _viewer_events(
                    port,
                    h["x-viewer"],
                    lambda ev: ev[-1]["type"] == "session.ended",
                    30,
                    subscribed,
                )

            ending = asyncio.ensure_future(watch_end())
            await subscribed.wait()  # the viewer is subscribed before DELETE is sent
            auth_only = {"Authorization": f"Bearer {TOKEN}"}
            st, _, _, _ = await asyncio.to_thread(
                _request, port, "DELETE", h["location"], b"", auth_only
            )
            out["delete"] = st
            out["end"] = await ending
            out["after"] = (sid in server.sessions, len(server.whip.ingests))
            await pc.close()
        finally:
            await server.shutdown()
        return out

    out = asyncio.run(main())
    st, h = out["options"]
    print(
        f"WHIP: POST answered in {out['post'][2]} s, 10 frames with faces after "
        f"{out['first_faces_s']} s; fingerprint {out['fingerprint'][0][:23]}..."
    )
    assert out["fingerprint"][0] == out["fingerprint"][1]
    assert st == 204 and h["accept-post"] == "application/sdp"
    assert h["access-control-allow-origin"].startswith("https://127.0.0.1:")
    assert "POST" in h["access-control-allow-methods"]
    assert "Authorization" in h["access-control-allow-headers"]
    assert out["options_foreign"] == 403
    assert out["no_token"][0] == 401 and "bearer" in out["no_token"][1]["www-authenticate"].lower()
    assert out["wrong_token"] == 401 and out["wrong_type"] == 415
    st, h, _ = out["post"]
    assert st == 201 and h["content-type"] == "application/sdp"
    assert h["location"].startswith("/whip/")
    assert out["full"] == (503, "10")
    assert out["purpose"] == "tests of WHIP ingest"
    started = out["events"][0]
    assert started["type"] == "session.started" and started["purpose"] == "tests of WHIP ingest"
    frames = [e for e in out["events"] if e["type"] == "frame" and e["faces"]]
    assert len(frames) >= 10 and frames[-1]["faces"][0]["name"] == "Face 1"
    assert out["patch"] == 405 and out["delete_wrong"] == 401 and out["delete"] == 200
    types = [e["type"] for e in out["end"]]
    assert types[-2:] == ["session.summary", "session.ended"]
    assert out["end"][-1]["reason"] == "publisher ended the WHIP session"
    assert out["end"][-2]["faces"], "the summary names the face seen"
    assert out["after"] == (False, 0)


@pytest.mark.integration
def test_whip_off_without_tokens(config: Config, factory: SessionFactory) -> None:
    async def main() -> tuple[int, bytes, int]:
        server = LiveServer(config.replace("live", port=0, tls_self_signed=True), factory)
        await server.start()
        try:
            st, _, body, _ = await asyncio.to_thread(
                _request, server.port, "POST", "/whip", b"v=0", {"Authorization": "Bearer x"}
            )
            st2 = (await asyncio.to_thread(_request, server.port, "GET", "/healthz"))[0]
        finally:
            await server.shutdown()
        return st, body, st2

    st, body, health = asyncio.run(main())
    assert st == 404 and b"--whip" in body and health == 200


#: In the page: publish the camera to /whip (what a WHIP client in a browser does).
WHIP_FROM_PAGE = """(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  const pc = new RTCPeerConnection({iceServers: []});
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => pc.iceGatheringState === 'complete' ? r()
    : pc.addEventListener('icegatheringstatechange',
        () => pc.iceGatheringState === 'complete' && r()));
  const res = await fetch('/whip', {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer %s'}});
  if (res.status !== 201) return {status: res.status, text: await res.text()};
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  window.__whip = pc;
  return {status: res.status, location: res.headers.get('Location'),
          secure: window.isSecureContext};
})()"""


@pytest.mark.integration
def test_browser_over_https_page_and_whip(
    config: Config, factory: SessionFactory, tmp_path: Path
) -> None:
    """Chromium over HTTPS: the page's own flow finds the face; then the page publishes by WHIP."""
    _require_chromium()
    face = cv2.resize(imread(MEDIA / "identities" / "face_recognition" / "obama.jpg"), (640, 480))
    y4m = tmp_path / "camera.y4m"
    write_y4m(face, y4m)

    async def main() -> dict[str, Any]:
        server = _server(config, factory)
        await server.start()
        out: dict[str, Any] = {}
        try:
            flags = ("--ignore-certificate-errors", f"--use-file-for-fake-video-capture={y4m}")
            async with chromium(tmp_path / "profile", *flags) as cdp:
                url = f"https://127.0.0.1:{server.port}/"
                page = await cdp.open(url)
                out["scheme"] = await cdp.js(page, "location.protocol + isSecureContext")
                await cdp.js(
                    page,
                    "document.getElementById('consent-check').click();"
                    "document.getElementById('start').click(); true",
                )
                out["page_face"] = await cdp.js(page, WAIT_FACE)
                # The same browser publishes by WHIP from a second tab of the page's origin.
                tab = await cdp.open(url + "healthz")
                got = asyncio.get_running_loop().create_future()

                async def sink(msg: str) -> None:
                    ev = json.loads(msg)
                    if ev["type"] == "frame" and ev["faces"] and not got.done():
                        got.set_result(ev)

                out["whip"] = await cdp.js(tab, WHIP_FROM_PAGE % TOKEN)
                sid = str(out["whip"].get("location", "/")).rsplit("/", 1)[1]
                if sid in server.sessions:
                    server.sessions[sid].subscribe(Subscriber(sink, "viewer"))
                    async with asyncio.timeout(45):
                        out["whip_frame"] = await got
        finally:
            await server.shutdown()
        return out

    out = asyncio.run(main())
    print(f"https page: {out['scheme']}, face {out['page_face']}; WHIP from Chromium {out['whip']}")
    assert out["scheme"] == "https:true"
    assert out["page_face"]["name"] == "Face 1"
    assert out["whip"]["status"] == 201 and out["whip"]["secure"] is True
    frame = out["whip_frame"]
    print(
        f"WHIP from Chromium: frame {frame['width']}x{frame['height']}, {len(frame['faces'])} face"
    )
    assert (frame["width"], frame["height"]) == (640, 480) and frame["faces"][0]["name"] == "Face 1"


@pytest.mark.parametrize(
    "flags", [["--tls-cert", "x.pem"], ["--tls-self-signed", "--tls-key", "k"]]
)
def test_cli_tls_flags_refused_alone(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    code = main(["serve", "--port", "0", *flags, "--models", "/nonexistent"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tls" in err[0].lower(), err
