"""The WebRTC transport: one peer-connection factory, and an aiortc peer as a media source.

This is the only module that knows aiortc. `answer_peer` makes every peer of the process (the
publisher page and WHIP through `PeerSource`, each participant of a Janus room in janus.py):
ICE servers from `live.ice_servers`, host candidates gathered only on the chosen addresses, and
each received track handed to a `TrackSink`. A track's decoded `av` frames become
`ReceivedVideo` (media time from the frame's pts, the receive time, a BGR conversion that runs
in the inference executor) and `ReceivedAudio`; the session analyses them like any source.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from stream.core.config import Config
from stream.core.types import U8
from stream.live.events import Error
from stream.live.protocol import BadMessage
from stream.live.session import LiveSession
from stream.live.source import ReceivedAudio, ReceivedVideo, TrackSink

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


T = TypeVar("T")


def _same(source: AsyncIterator[T]) -> AsyncIterator[T]:
    return source


async def answer_peer(
    config: Config,
    sdp: str,
    sink: TrackSink,
    addresses: list[str] | None,
    label: Callable[[Any], str] = lambda track: str(track.id),
    name: str | None = None,
    wrap: Callable[[AsyncIterator[Any]], AsyncIterator[Any]] = _same,
    on_state: Callable[[Any], Any] | None = None,
) -> Any:
    """The process's one way to make a peer: answer an SDP offer, tracks into `sink`.

    Video tracks are analysed, audio tracks too when `audio.enabled`; anything else is drained.

    Args:
        addresses: gather ICE host candidates on these only (None: every interface but
            loopback, aioice's default).
        label: the session's track id of an aiortc track.
        name: the faces first seen on its video are named after it (a participant's name).
        wrap: wraps each track's frame iterator (e.g. to notice when a participant's tracks end).
        on_state: called (awaited if it returns an awaitable) on every connection state change.

    Returns:
        The `RTCPeerConnection`, its answer in `localDescription.sdp`.

    Raises:
        Exception: aiortc's error for an unusable offer (the peer is closed).
    """
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    ice = [
        RTCIceServer(s.urls, s.username or None, s.credential or None)
        for s in config.live.ice_servers
    ]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video":
            sink.add_video(label(track), wrap(video_source(track)), name)
        elif track.kind == "audio" and config.audio.enabled:
            sink.add_audio(label(track), wrap(audio_source(track)))
        else:
            sink.spawn(drain(track))

    refused = False  # a peer closed for an unusable offer: its closing is not news

    if on_state is not None:

        @pc.on("connectionstatechange")
        async def changed() -> None:
            if refused:
                return
            result = on_state(pc)
            if asyncio.iscoroutine(result):
                await result

    try:
        with gather_on(addresses):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())  # gathers the candidates
    except BaseException:
        refused = True
        with contextlib.suppress(Exception):
            await pc.close()
        raise
    return pc


class PeerSource:
    """A publisher's aiortc peer (page or WHIP) as a session's media source.

    `done` is set when the media connection fails or closes (not when `close()` closed it); the
    session gets a `peer_failed` / `peer_closed` error event then.
    """

    def __init__(self, config: Config, sdp: str) -> None:
        self.config = config
        self.sdp = sdp
        self.pc: Any = None
        self.answer = ""
        self.done = asyncio.Event()
        self._closing = False

    async def start(self, sink: TrackSink) -> None:
        async def state(pc: Any) -> None:
            if pc.connectionState in ("failed", "closed") and not self._closing:
                log.info("peer connection %s", pc.connectionState)
                what = pc.connectionState
                sink.publish(Error("peer_" + what, f"the media connection is {what}"))
                self.done.set()

        local = loopback_addresses(self.config.live.host)
        self.pc = await answer_peer(self.config, self.sdp, sink, local, on_state=state)
        self.answer = self.pc.localDescription.sdp

    @property
    def state(self) -> str:
        return str(self.pc.connectionState) if self.pc is not None else "new"

    async def close(self) -> None:
        self._closing = True
        if self.pc is not None:
            await self.pc.close()
        self.done.set()


async def answer_offer(session: LiveSession, config: Config, sdp: str) -> PeerSource:
    """Give `session` the publisher peer of an SDP offer; after a `reset`, it
    replaces the current one. The answer is `.answer` of the result.

    Raises:
        BadMessage: `bad_message` (a second offer without reset) or `invalid_sdp`.
    """
    peer = PeerSource(config, sdp)
    try:
        await session.attach(peer)
    except BadMessage:
        raise
    except Exception as exc:  # aiortc raises ValueError and others for bad SDP
        raise BadMessage("invalid_sdp", f"could not use the offer: {exc}") from None
    return peer
