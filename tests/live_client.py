"""A real WebRTC publisher (aiortc) for end-to-end tests and the live benchmark."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


async def publish(
    url: str,
    clip: Path | None = None,
    until: Callable[[list[dict[str, Any]]], bool] = lambda ev: False,
    timeout: float = 30.0,
    track: Any = None,
    on_event: Callable[[dict[str, Any], float], None] | None = None,
) -> list[dict[str, Any]]:
    """Stream a clip (or a given track) to the server and collect events until `until` holds.

    Stops at the end of the media (the server then sends its summary) or after `timeout`.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if track is None:
        if clip is None:
            raise ValueError("give a clip or a track")
        track = MediaPlayer(str(clip)).video
    pc.addTrack(track)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        async with websockets.connect(url, max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "hello", "consent": True, "purpose": "test"}))
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            while not until(events):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), left)
                except (TimeoutError, websockets.ConnectionClosed):
                    break
                ev = json.loads(raw)
                events.append(ev)
                if on_event is not None:
                    on_event(ev, time.time())
                if ev["type"] == "answer":
                    await pc.setRemoteDescription(RTCSessionDescription(ev["sdp"], "answer"))
            await ws.send(json.dumps({"type": "bye"}))
            try:  # collect the closing summary
                async with asyncio.timeout(10):
                    async for raw in ws:
                        events.append(json.loads(raw))
            except (TimeoutError, websockets.ConnectionClosed):
                pass
    finally:
        await pc.close()
    return events
