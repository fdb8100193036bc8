"""The client protocol of the live server: message validation, limits and close codes.

WebSocket close codes: 1009 message too big, 4400 too many invalid messages, 4401 missing or
wrong session/token, 4408 no offer within `live.hello_timeout_s` of hello, 4409 too slow to
receive events (the subscriber's queue overflowed), 4429 too many messages per second, 4503
too many sessions or viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4409
CLOSE_RATE = 4429
CLOSE_FULL = 4503
MAX_INVALID = 5
_NAME_OK = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


async def close_draining(ws: ServerConnection, code: int, reason: str) -> None:
    """Close from the server side while still reading (and discarding) what the client sends.

    Without the draining, a client that floods the socket fills the incoming queue, the server
    stops reading, never sees the client's close frame and the close takes `close_timeout`.
    """
    closing = asyncio.ensure_future(ws.close(code, reason))
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    await closing


class RateLimit:
    """Token bucket: `rate` messages per second, bursts up to twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = 2 * rate
        self.last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class BadMessage(Exception):
    """A client message that is not valid JSON or not a known, well-formed command."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_message(raw: str | bytes) -> dict[str, Any]:
    """Decode and validate one client message.

    Raises:
        BadMessage: with a code and a human-readable reason.
    """
    if isinstance(raw, bytes):
        raise BadMessage("bad_message", "binary messages are not accepted")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise BadMessage("bad_json", "message is not valid JSON") from None
    except RecursionError:
        raise BadMessage("bad_json", "message is nested too deeply") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadMessage("bad_message", "message must be a JSON object with a string 'type'")
    t = msg["type"]
    if t == "hello":
        if msg.get("consent") is not True:
            raise BadMessage("consent_required", "hello needs consent: true")
        if not isinstance(msg.get("purpose", ""), str) or len(msg.get("purpose", "")) > 200:
            raise BadMessage("bad_message", "purpose must be a string of at most 200 characters")
    elif t == "offer":
        if not isinstance(msg.get("sdp"), str) or not msg["sdp"].startswith("v=0"):
            raise BadMessage("invalid_sdp", "offer needs an SDP string starting with v=0")
    elif t in ("rename", "exclude", "rename_speaker"):
        fid = msg.get("id")
        what = "speaker (voice) id" if t == "rename_speaker" else "face id"
        if not isinstance(fid, int) or isinstance(fid, bool) or fid < 1:
            raise BadMessage("bad_message", f"{t} needs a {what} (integer >= 1)")
        if t in ("rename", "rename_speaker"):
            name = msg.get("name")
            if not isinstance(name, str) or not _NAME_OK.fullmatch(name.strip()):
                raise BadMessage("bad_message", "name must be 1-64 printable characters")
            msg["name"] = name.strip()
        elif not isinstance(msg.get("excluded", True), bool):
            raise BadMessage("bad_message", "excluded must be true or false")
    elif t not in ("reset", "bye"):
        raise BadMessage("unknown_type", f"unknown message type {t!r}")
    return msg


def check_offer(sdp: str, max_video: int, max_audio: int) -> None:
    """Refuse an offer without media, or with more tracks than a session may analyse.

    Every audio track gets its own voice analyser on the shared voice thread and every video
    track its own pipeline, so an offer with hundreds of m-lines would exhaust memory and CPU;
    one more m-line of another kind (a data channel) is allowed.

    Raises:
        BadMessage: `invalid_sdp` (no media) or `too_many_tracks`.
    """
    kinds = [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]
    video, audio = kinds.count("video"), kinds.count("audio")
    if not kinds:
        raise BadMessage("invalid_sdp", "offer has no media (m=) lines")
    if video > max_video or audio > max_audio or len(kinds) - video - audio > 1:
        raise BadMessage(
            "too_many_tracks",
            f"offer has {video} video and {audio} audio tracks ({len(kinds)} m-lines); "
            f"a session takes at most {max_video} video and {max_audio} audio tracks",
        )


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a client-supplied token (any characters) with ours."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def _hostname(host: str) -> str:
    """The name part of a Host header value ("[::1]:8080" -> "::1", "a.b:80" -> "a.b")."""
    return (urlsplit(f"//{host}").hostname or "").rstrip(".")


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host header may reach the server (DNS-rebinding defence).

    IP literals and `localhost` always may (a rebinding attack needs a DNS name that the
    attacker controls); other names only when listed in `allowed` ("*" allows any).
    """
    if "*" in allowed:
        return True
    try:
        name = _hostname(host or "")
    except ValueError:
        return False
    if not name:
        return False
    if name == "localhost" or name in {a.lower() for a in allowed}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket handshake's Origin may connect.

    No Origin header: a non-browser client (bots, tests, OBS plugins), allowed. A browser page
    is allowed from the server's own origin (same host and port as the Host header), or when
    its origin ("scheme://host[:port]", or "null" for file pages) is listed in `allowed`
    ("*" allows any page).
    """
    if origin is None or "*" in allowed:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in {a.lower().rstrip("/") for a in allowed}:
        return True
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == (host or "").lower()
    except ValueError:
        return False
