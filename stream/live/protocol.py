"""The client protocol of the live server: message validation, limits and close codes.

WebSocket close codes: 1009 message too big, 4400 too many invalid messages, 4401 missing or
wrong session/token, 4429 too many messages per second, 4503 too many sessions or viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
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
    elif t in ("rename", "exclude"):
        fid = msg.get("id")
        if not isinstance(fid, int) or isinstance(fid, bool) or fid < 1:
            raise BadMessage("bad_message", f"{t} needs a face id (integer >= 1)")
        if t == "rename":
            name = msg.get("name")
            if not isinstance(name, str) or not _NAME_OK.fullmatch(name.strip()):
                raise BadMessage("bad_message", "name must be 1-64 printable characters")
            msg["name"] = name.strip()
        elif not isinstance(msg.get("excluded", True), bool):
            raise BadMessage("bad_message", "excluded must be true or false")
    elif t not in ("reset", "bye"):
        raise BadMessage("unknown_type", f"unknown message type {t!r}")
    return msg
