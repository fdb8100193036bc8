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
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.live.events import schema

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4409
CLOSE_RATE = 4429
CLOSE_FULL = 4503
MAX_INVALID = 5
#: The longest face or speaker name, and the longest declared purpose.
MAX_NAME = 64
MAX_PURPOSE = 200
#: Unicode categories a name may not contain: controls (C0/C1), format characters (bidi
#: overrides, zero-width joiners), lone surrogates, private use and unassigned code points.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


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


def printable(value: object, what: str, max_len: int = MAX_NAME, empty: bool = False) -> str:
    """A name (face, speaker) or purpose, stripped, checked to be printable text.

    Refuses non-strings, more than `max_len` characters, an empty value (unless `empty`) and any
    character of Unicode category Cc, Cf, Cs, Co or Cn (controls, bidi overrides, lone
    surrogates, private use, unassigned): a name is shown to other people and written into
    reports, so it must look like what it is.

    Raises:
        ValueError: the reason, one line, naming `what`.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    text = value.strip()
    if not text and not empty:
        raise ValueError(f"{what} must not be empty")
    if len(text) > max_len:
        raise ValueError(f"{what} must be at most {max_len} characters")
    for ch in text:
        if unicodedata.category(ch) in _UNPRINTABLE:
            raise ValueError(
                f"{what} must be printable text (U+{ord(ch):04X} is a control, format, "
                "surrogate, private-use or unassigned character)"
            )
    return text


# -- commands (the client's messages; documented in events.schema.json, $defs/command) -------
@dataclass(frozen=True)
class Command:
    """Base of every client command; `TYPE` is the wire `type`."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Command):
    """Consent (always true once parsed) and the declared purpose; opens the session."""

    TYPE: ClassVar[str] = "hello"
    purpose: str = ""


@dataclass(frozen=True)
class Offer(Command):
    """An SDP offer (the publisher's media)."""

    TYPE: ClassVar[str] = "offer"
    sdp: str


@dataclass(frozen=True)
class Rename(Command):
    TYPE: ClassVar[str] = "rename"
    id: int
    name: str


@dataclass(frozen=True)
class Exclude(Command):
    TYPE: ClassVar[str] = "exclude"
    id: int
    excluded: bool = True


@dataclass(frozen=True)
class RenameSpeaker(Command):
    TYPE: ClassVar[str] = "rename_speaker"
    id: int
    name: str


@dataclass(frozen=True)
class Reset(Command):
    TYPE: ClassVar[str] = "reset"


@dataclass(frozen=True)
class Bye(Command):
    TYPE: ClassVar[str] = "bye"


COMMAND_TYPES: tuple[type[Command], ...] = (
    Hello,
    Offer,
    Rename,
    Exclude,
    RenameSpeaker,
    Reset,
    Bye,
)


def command_schema() -> dict[str, Any]:
    """The JSON schema of a client command (`$defs/command` of the event schema)."""
    full = schema()
    return {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": "#/$defs/command"}


def _id(msg: dict[str, Any], what: str) -> int:
    fid = msg.get("id")
    if not isinstance(fid, int) or isinstance(fid, bool) or fid < 1:
        raise BadMessage("bad_message", f"{msg['type']} needs a {what} (integer >= 1)")
    return fid


def _name(value: object, what: str = "name", max_len: int = MAX_NAME, empty: bool = False) -> str:
    try:
        return printable(value, what, max_len, empty)
    except ValueError as exc:
        raise BadMessage("bad_message", str(exc)) from None


def parse_command(raw: str | bytes) -> Command:
    """Decode and validate one client message into its command.

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
    match msg["type"]:
        case "hello":
            if msg.get("consent") is not True:
                raise BadMessage("consent_required", "hello needs consent: true")
            return Hello(_name(msg.get("purpose", ""), "purpose", MAX_PURPOSE, empty=True))
        case "offer":
            sdp = msg.get("sdp")
            if not isinstance(sdp, str) or not sdp.startswith("v=0"):
                raise BadMessage("invalid_sdp", "offer needs an SDP string starting with v=0")
            return Offer(sdp)
        case "rename":
            return Rename(_id(msg, "face id"), _name(msg.get("name")))
        case "rename_speaker":
            return RenameSpeaker(_id(msg, "speaker (voice) id"), _name(msg.get("name")))
        case "exclude":
            fid = _id(msg, "face id")
            excluded = msg.get("excluded", True)
            if not isinstance(excluded, bool):
                raise BadMessage("bad_message", "excluded must be true or false")
            return Exclude(fid, excluded)
        case "reset":
            return Reset()
        case "bye":
            return Bye()
        case other:
            raise BadMessage("unknown_type", f"unknown message type {other!r}")


def check_offer(sdp: str, max_video: int, max_audio: int) -> None:
    """Refuse an offer without media, or with more tracks than a session may analyse.

    Every audio track gets its own voice analyser on the shared voice thread and every video
    track its own pipeline, so an offer with hundreds of m-lines would exhaust memory and CPU;
    one more m-line of another kind (a data channel) is allowed.

    An offer must send media: at least one audio or video m-line that is not disabled (port 0)
    and whose direction is sendrecv or sendonly (a recvonly offer or a lone data channel would
    hold a session that never gets a frame).

    Raises:
        BadMessage: `invalid_sdp` (no media, or none sent) or `too_many_tracks`.
    """
    kinds: list[str] = []
    sending = 0
    default = "sendrecv"  # the session-level direction, until the first m-line
    for section in re.split(r"\r?\n(?=m=)", sdp):
        lines = section.splitlines()
        if not lines or not lines[0].startswith("m="):
            default = _direction(lines, default)
            continue
        kind, _, rest = lines[0][2:].partition(" ")
        kinds.append(kind)
        port = rest.split(" ", 1)[0].split("/", 1)[0]
        if kind in ("audio", "video") and port != "0":
            sending += _direction(lines[1:], default) in ("sendrecv", "sendonly")
    video, audio = kinds.count("video"), kinds.count("audio")
    if not kinds:
        raise BadMessage("invalid_sdp", "offer has no media (m=) lines")
    if video > max_video or audio > max_audio or len(kinds) - video - audio > 1:
        raise BadMessage(
            "too_many_tracks",
            f"offer has {video} video and {audio} audio tracks ({len(kinds)} m-lines); "
            f"a session takes at most {max_video} video and {max_audio} audio tracks",
        )
    if not sending:
        raise BadMessage(
            "invalid_sdp",
            "unusable offer: it sends no audio or video (recvonly, inactive, disabled or only "
            "a data channel)",
        )


def _direction(lines: list[str], default: str) -> str:
    """The media direction an SDP section's attributes set (`default` without one)."""
    for line in lines:
        if line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            return line.strip()[2:]
    return default


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
