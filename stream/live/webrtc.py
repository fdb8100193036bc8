"""The WebRTC transport: an aiortc peer per session, its tracks turned into frame sources.

This is the only module that knows aiortc. A track's decoded `av` frames become
`ReceivedVideo` (media time from the frame's pts, the receive time, a BGR conversion that runs
in the inference executor) and `ReceivedAudio`; the session analyses them like any source.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import numpy as np

from stream.core.config import Config
from stream.core.types import U8
from stream.live.events import Answer, Error
from stream.live.session import LiveSession, ReceivedAudio, ReceivedVideo

log = logging.getLogger(__name__)

#: The addresses ICE host candidates are gathered on while answering, when not all of them.
_ice_addresses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "ice_addresses", default=None
)


def loopback_addresses(host: str) -> list[str] | None:
    """The loopback addresses matching an HTTP bind host, or None when it is not loopback."""
    if host == "localhost":
        return ["127.0.0.1", "::1"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return [str(ip)] if ip.is_loopback else None


def _install_address_filter() -> None:
    """Let `_ice_addresses` choose aioice's host candidates (aioice has no option for it).

    aioice gathers on every interface but loopback. A server whose HTTP side listens on
    loopback only should not open WebRTC sockets reachable from the network, so while one of
    its answers is made (a context variable, seen by the tasks aiortc spawns for gathering),
    only the loopback addresses are used. Other peers in the process are unaffected.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "emotion_stream_filter", False):
        return

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _ice_addresses.get()
        if chosen is None:
            return original(use_ipv4, use_ipv6)
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    host_addresses.emotion_stream_filter = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = host_addresses


@contextlib.contextmanager
def gather_on(addresses: list[str] | None) -> Iterator[None]:
    """Within the block (and tasks it starts), peers gather ICE host candidates on `addresses`
    only (None: aioice's default, every interface but loopback). Wrap setLocalDescription."""
    if addresses is not None:
        _install_address_filter()
    token = _ice_addresses.set(addresses)
    try:
        yield
    finally:
        _ice_addresses.reset(token)


async def video_source(track: Any) -> AsyncIterator[ReceivedVideo]:
    """Frames of an aiortc video track, with media time from 0 at the first frame."""
    first: float | None = None
    while True:
        frame = await track.recv()
        received = time.perf_counter()
        t = float(frame.pts * frame.time_base) if frame.pts is not None else received
        first = t if first is None else first

        def image(frame: Any = frame) -> U8:
            return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))

        yield ReceivedVideo(max(t - first, 0.0), received, image)


async def audio_source(track: Any) -> AsyncIterator[ReceivedAudio]:
    """Frames of an aiortc audio track with their receive times."""
    while True:
        frame = await track.recv()
        yield ReceivedAudio(frame, time.perf_counter())


async def drain(track: Any) -> None:
    """Read and discard a track (aiortc queues every frame until it is read)."""
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


async def answer_offer(
    session: LiveSession,
    config: Config,
    sdp: str,
    error: Callable[[str, str], Awaitable[None]],
) -> None:
    """Make the session's peer from an SDP offer and publish the answer.

    Video tracks are analysed, audio tracks too when `audio.enabled`; anything else is drained.
    After a `reset`, an offer replaces the session's peer and its tracks. Errors (a second
    offer without reset, unusable SDP) go to `error(code, message)`.
    """
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    if session.peer is not None:
        if not session.replace_peer:
            await error("bad_message", "this session already has a peer; send reset or reconnect")
            return
        await session.stop_media()
    ice = [
        RTCIceServer(s.urls, s.username or None, s.credential or None)
        for s in config.live.ice_servers
    ]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
    session.peer = pc

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video":
            session.add_video(track.id, video_source(track))
        elif track.kind == "audio" and config.audio.enabled:
            session.add_audio(track.id, audio_source(track))
        else:
            session.spawn(drain(track))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        current = session.peer is pc and not session.closed
        if pc.connectionState in ("failed", "closed") and current:
            log.info("session %s: peer connection %s", session.id, pc.connectionState)
            session.publish(
                Error("peer_" + pc.connectionState, f"the media connection is {pc.connectionState}")
            )

    local = loopback_addresses(config.live.host)
    if local is not None:
        _install_address_filter()
    token = _ice_addresses.set(local)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)  # gathers the candidates
    except Exception as exc:  # aiortc raises ValueError and others for bad SDP
        session.peer = None
        with contextlib.suppress(Exception):
            await pc.close()
        await error("invalid_sdp", f"could not use the offer: {exc}")
        return
    finally:
        _ice_addresses.reset(token)
    session.publish(Answer(pc.localDescription.sdp))
