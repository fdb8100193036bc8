"""A real WebRTC publisher (aiortc) for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer


class Publisher:
    """A publisher that has sent consent and its offer: its socket and peer connection."""

    def __init__(self, ws: Any, pc: RTCPeerConnection) -> None:
        self.ws = ws
        self.pc = pc

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The server's events; the answer is applied to the peer connection on the way."""
        async for raw in self.ws:
            ev: dict[str, Any] = json.loads(raw)
            if ev["type"] == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(ev["sdp"], "answer"))
            yield ev


@contextlib.asynccontextmanager
async def connect_publisher(
    url: str, tracks: list[MediaStreamTrack], purpose: str = "test"
) -> AsyncIterator[Publisher]:
    """Connect, give consent and send an offer with `tracks` (no ICE servers: loopback)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        pc.addTrack(track)
    try:
        async with websockets.connect(url, max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True, "purpose": purpose}))
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            yield Publisher(ws, pc)
    finally:
        await pc.close()


def player_tracks(clip: Path, loop: bool = False, audio: bool = False) -> list[MediaStreamTrack]:
    """The video (and audio) track of a media file, played in real time."""
    player = MediaPlayer(str(clip), loop=loop)
    tracks = [player.video, player.audio] if audio else [player.video]
    out = [t for t in tracks if t is not None]
    assert len(out) == len(tracks), f"{clip} lacks a requested track"
    return out


async def publish(
    url: str,
    clip: Path,
    until: Callable[[list[dict[str, Any]]], bool] = lambda ev: False,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Stream a clip to the server and collect events until `until` holds.

    Stops at the end of the media, or after `timeout`; then says bye and collects the closing
    summary.
    """
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    async with connect_publisher(url, player_tracks(clip)) as pub:
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                async for ev in pub.events():
                    events.append(ev)
                    if until(events):
                        break
        await pub.send({"type": "bye"})
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                async for ev in pub.events():
                    events.append(ev)
    return events
