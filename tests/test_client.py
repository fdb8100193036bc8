"""stream.client: typed events from the wire, and a publisher and a viewer against a real
`LiveServer` in this process (real models: integration)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from stream import client
from stream.core.config import Config
from stream.core.errors import MediaError
from stream.live.events import (
    EVENT_TYPES,
    Answer,
    AttentionDrop,
    Error,
    Event,
    FaceExcluded,
    FaceRenamed,
    FaceSummaries,
    Frame,
    Gesture,
    Prosody,
    Redirect,
    SessionEnded,
    SessionReset,
    SessionStarted,
    SessionSummary,
    SpeakerActive,
    SpeakerRenamed,
    VoiceTurnEnded,
    Wall,
    envelope,
)
from stream.live.server import LiveServer
from stream.models.runtime import SessionFactory
from stream.offline.media import read_frames

from .conftest import VIDEO

CLIP = VIDEO / "pyfeat_single_face.mp4"  # 2.4 s, one face

FACE = {"id": 1, "name": "Face 1", "box": [0.1, 0.1, 0.3, 0.4], "excluded": True}
SAMPLES: list[Event] = [
    SessionStarted("publisher", ["neutral"], "a test", [], viewer_token="tok"),
    Answer("v=0"),
    Frame("video", 1.5, 640, 360, [FACE], {"analysed_fps": 9.5}),
    FaceSummaries([], {"faces": 0}),
    FaceRenamed(1, "Ada"),
    FaceExcluded(2, True),
    SessionReset(),
    Error("media_timeout", "no video for 10 s"),
    SessionSummary(12.5, [], {"faces": 0}),
    SessionEnded("bye"),
    Prosody("audio", 1, "Ada", {"t": 2.0, "speaking": True, "f0_median_hz": 180.0}, 1, "S 1", 1),
    SpeakerActive("audio", None, None, False, 0.0),
    SpeakerRenamed(1, "Bob"),
    Redirect("full", "http://b:8080/", "ws://b:8080/ws"),
    Wall([{"session": "x"}]),
    VoiceTurnEnded("audio", 1.0, 3.5, 0.21, 1, None),
    Gesture(1, "nod", 2.0, 2.8, 4, 6.5),
    AttentionDrop(2, 4.0, 7.5, 3.5),
]


def test_every_event_type_round_trips_through_the_wire() -> None:
    missing = set(EVENT_TYPES) - {type(e) for e in SAMPLES}
    assert not missing, f"add a sample of {missing} to SAMPLES: the client must parse it"
    for i, event in enumerate(SAMPLES):
        wire = envelope(event, "abcd1234", i, time.time())
        assert client.parse_event(wire) == event, wire


def test_newer_fields_are_ignored_unknown_types_kept_other_versions_refused() -> None:
    wire = envelope(FaceRenamed(3, "Cy"), "s", 0, 0.0) | {"colour": "red"}
    assert client.parse_event(wire) == FaceRenamed(3, "Cy")
    other = client.parse_event({"v": 1, "type": "face.mood", "session": "s", "seq": 1, "x": 2})
    assert other == client.UnknownEvent("face.mood", {"x": 2})
    with pytest.raises(client.LiveError, match="schema version 2"):
        client.parse_event({"v": 2, "type": "frame"})


def test_server_urls() -> None:
    assert client._ws_url("http://h:8080/?x=1", "/ws") == "ws://h:8080/ws"
    assert client._ws_url("https://h/index.html", "/ws/view") == "wss://h/ws/view"
    assert client._ws_url("ws://h:1/ws", "/ws/view") == "ws://h:1/ws/view"
    with pytest.raises(client.LiveError, match="not a server URL"):
        client._ws_url("h:8080", "/ws")


def test_a_missing_file_is_a_media_error() -> None:
    async def main() -> None:
        async for _ in client.publish("ws://127.0.0.1:9/ws", "/nonexistent.mp4", purpose="t"):
            pass

    with pytest.raises(MediaError, match="cannot open"):
        asyncio.run(main())


def test_an_unreachable_server_is_a_live_error() -> None:
    async def main() -> None:
        async for _ in client.view("http://127.0.0.1:9", "s", "t"):
            pass

    with pytest.raises(client.LiveError, match="cannot connect"):
        asyncio.run(main())


async def _server(config: Config, factory: SessionFactory) -> LiveServer:
    server = LiveServer(config.replace("live", port=0), factory)
    await server.start()
    return server


def _faces(events: list[Any]) -> set[int]:
    return {f["id"] for e in events if isinstance(e, Frame) for f in e.faces}


@pytest.mark.integration
def test_publish_a_file_and_view_it_live(config: Config, factory: SessionFactory) -> None:
    async def main() -> tuple[list[Event], list[Event], Exception | None]:
        server = await _server(config, factory)
        url = f"http://127.0.0.1:{server.port}/"
        seen: list[Event] = []
        viewed: list[Event] = []
        viewer: asyncio.Task[None] | None = None
        refused: Exception | None = None

        async def watch(session: str, token: str) -> None:
            async for ev in client.view(url, session, token):
                viewed.append(ev)

        try:
            async with asyncio.timeout(60):
                async with client.connect(url, CLIP, purpose="api test", audio=False) as pub:
                    async for ev in pub.events():
                        seen.append(ev)
                        if isinstance(ev, SessionStarted):
                            assert pub.session and pub.viewer_token
                            viewer = asyncio.create_task(watch(pub.session, pub.viewer_token))
                            try:
                                async for _ in client.view(url, pub.session, "wrong"):
                                    pass
                            except client.LiveError as exc:
                                refused = exc
                assert viewer is not None
                await viewer
        finally:
            await server.shutdown()
        return seen, viewed, refused

    seen, viewed, refused = asyncio.run(main())
    kinds = [type(e).__name__ for e in seen]
    frames = [e for e in seen if isinstance(e, Frame)]
    print(f"publisher: {len(seen)} events, {len(frames)} frames; viewer: {len(viewed)} events")
    assert kinds[0] == "SessionStarted" and "Answer" in kinds
    assert kinds[-2:] == ["SessionSummary", "SessionEnded"]  # the file ended: bye was sent
    assert len(frames) >= 5 and _faces(seen) == {1}
    assert isinstance(viewed[-1], SessionEnded) and _faces(viewed) == {1}
    assert any(isinstance(e, SessionSummary) and e.faces for e in viewed)
    assert isinstance(refused, client.LiveError) and refused.code == 4401


@pytest.mark.integration
def test_publish_your_own_rgb_frames(config: Config, factory: SessionFactory) -> None:
    frames = [(f.image[..., ::-1].copy(), f.t) for f in read_frames(CLIP, 15)]  # RGB

    async def main() -> list[Event]:
        server = await _server(config, factory)
        out: list[Event] = []
        try:
            async with asyncio.timeout(60):
                url = f"ws://127.0.0.1:{server.port}/ws"
                async for ev in client.publish(url, frames, purpose="api test", rgb=True):
                    out.append(ev)
        finally:
            await server.shutdown()
        return out

    events = asyncio.run(main())
    summary = next(e for e in events if isinstance(e, SessionSummary))
    print(f"{len(events)} events; summary faces {[f['id'] for f in summary.faces]}")
    assert isinstance(events[-1], SessionEnded)
    assert _faces(events) == {1}
    analysed = [e for e in events if isinstance(e, Frame)]
    assert sum(bool(e.faces) for e in analysed) >= 0.8 * len(analysed), len(analysed)


def test_frames_track_sends_the_pixels_and_times_it_is_given() -> None:
    bgr = np.zeros((8, 16, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    rgb = bgr[..., ::-1].copy()

    async def main() -> list[Any]:
        out = []
        for frames, is_rgb in (([(bgr, 0.0), (bgr, 0.04)], False), ([(rgb, 0.0)], True)):
            track = client.FramesTrack(frames, rgb=is_rgb)
            with contextlib.suppress(MediaStreamError):
                while True:
                    out.append(await track.recv())
            assert track.readyState == "ended"
        return out

    got = asyncio.run(main())
    assert len(got) == 3
    for frame in got:
        assert np.array_equal(frame.to_ndarray(format="bgr24"), bgr)
    assert [float(f.pts * f.time_base) for f in got] == [0.0, 0.04, 0.0]


def test_the_client_source_types(tmp_path: Path) -> None:
    track = client.FramesTrack([(np.zeros((4, 4, 3), np.uint8), 0.0)])
    assert client._tracks(track, True, None, None, False, False) == [track]
    made = client._tracks([(np.zeros((4, 4, 3), np.uint8), 0.0)], True, None, None, False, True)
    assert isinstance(made[0], client.FramesTrack)
    with pytest.raises(MediaError, match="cannot publish"):
        client._tracks(3, True, None, None, False, False)  # type: ignore[arg-type]
