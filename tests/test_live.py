"""Live server end to end: a real aiortc publisher, schema-valid events, stable IDs, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import websockets

from stream.core.config import Config
from stream.live.events import schema
from stream.live.server import LiveServer
from stream.models.runtime import SessionFactory

from .conftest import VIDEO
from .live_client import connect_publisher, player_tracks, publish
from .test_gallery_view import build_gallery_video

VALIDATOR = jsonschema.Draft202012Validator(schema())


def run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro())


async def _server(config: Config, factory: SessionFactory) -> LiveServer:
    server = LiveServer(config.replace("live", port=0), factory)
    await server.start()
    return server


@pytest.fixture(scope="module")
def gallery4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "gallery4.mp4"
    build_gallery_video(path, seconds=4.0)  # A, B, C for 3 s, then A and B swap
    return path


def _clip_played(seconds: float) -> Callable[[list[dict[str, Any]]], bool]:
    """Stop once a frame event reaches `seconds` of media time."""
    return lambda evs: any(e["type"] == "frame" and e["media_t"] >= seconds for e in evs)


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


@pytest.mark.integration
def test_aiortc_publisher_gets_valid_events_and_stable_ids(
    config: Config, factory: SessionFactory, gallery4: Path
) -> None:
    async def main() -> list[dict[str, Any]]:
        server = await _server(config, factory)
        try:
            url = f"ws://127.0.0.1:{server.port}/ws"
            return await publish(url, gallery4, until=_clip_played(3.7), timeout=30)
        finally:
            await server.shutdown()

    events = run(main)
    for ev in events:
        VALIDATOR.validate(ev)
    types = [e["type"] for e in events]
    assert types[0] == "session.started" and "answer" in types
    assert types[-2:] == ["session.summary", "session.ended"]
    frames = [e for e in events if e["type"] == "frame"]
    assert len(frames) >= 20, len(frames)
    ids = {f["id"] for e in frames for f in e["faces"]}
    assert ids == {1, 2, 3}, ids
    assert max(len(e["faces"]) for e in frames) == 3
    seqs = [e["seq"] for e in events if e["session"] == events[0]["session"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    summary = events[-2]
    assert [f["id"] for f in summary["faces"]] == [1, 2, 3]
    m = frames[-1]["metrics"]
    assert m["analysed_fps"] > 3 and m["latency_ms"] < 1000
    print(
        f"live: {len(frames)} frame events, ids {sorted(ids)}, last metrics {m}",
    )


@pytest.mark.integration
def test_commands_and_viewer_over_the_real_server(
    config: Config, factory: SessionFactory, gallery4: Path
) -> None:
    """Over real WebSockets and WebRTC: a wrong viewer token gets 4401, a viewer with the right
    one sees the session, and a publisher command reaches the session. (Command semantics:
    rename, exclude, reset, are tested in process in test_session.py.)"""

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        server = await _server(config, factory)
        url = f"ws://127.0.0.1:{server.port}"
        events: list[dict[str, Any]] = []
        viewer_events: list[dict[str, Any]] = []
        bad_code = 0

        async def viewer(session: str, token: str) -> None:
            async with websockets.connect(f"{url}/ws/view?session={session}&token={token}") as ws:
                async for raw in ws:
                    viewer_events.append(json.loads(raw))

        try:
            tracks = player_tracks(gallery4, loop=True)
            async with connect_publisher(f"{url}/ws", tracks) as pub, asyncio.timeout(40):
                async for ev in pub.events():
                    events.append(ev)
                    if ev["type"] == "session.started":
                        wrong = f"{url}/ws/view?session={ev['session']}&token=wrong"
                        async with websockets.connect(wrong) as bad:
                            with contextlib.suppress(websockets.ConnectionClosed):
                                await bad.recv()
                            bad_code = bad.close_code or 0
                        watching = asyncio.create_task(viewer(ev["session"], ev["viewer_token"]))
                    elif ev["type"] == "frame" and any(f["id"] == 1 for f in ev["faces"]):
                        if not any(e["type"] == "face.renamed" for e in events):
                            await pub.send({"type": "rename", "id": 1, "name": "Alice"})
                        elif any(f["name"] == "Alice" for f in ev["faces"]):
                            break
                await pub.send({"type": "bye"})
                async for ev in pub.events():
                    events.append(ev)
            await asyncio.wait_for(watching, 10)
        finally:
            await server.shutdown()
        return events, viewer_events, bad_code

    events, viewer_events, bad_code = run(main)
    assert bad_code == 4401
    for ev in events + viewer_events:
        VALIDATOR.validate(ev)
    assert "face.renamed" in [e["type"] for e in events]
    vtypes = [e["type"] for e in viewer_events]
    assert vtypes[0] == "session.started" and "viewer_token" not in viewer_events[0]
    assert "frame" in vtypes and vtypes[-1] == "session.ended"
    assert any(
        f.get("name") == "Alice" for e in viewer_events if e["type"] == "frame" for f in e["faces"]
    )


@pytest.mark.integration
def test_two_video_tracks_get_distinct_ids(config: Config, factory: SessionFactory) -> None:
    """A call bot forwarding two participants' tracks: numbers stay unique in the session."""

    async def main() -> list[dict[str, Any]]:
        server = await _server(config, factory)
        tracks = [
            t
            for clip in ("pyfeat_single_face.mp4", "fer_test.mp4")
            for t in player_tracks(VIDEO / clip, loop=True)
        ]
        events: list[dict[str, Any]] = []
        seen: dict[str, set[int]] = {}
        try:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect_publisher(url, tracks) as pub, asyncio.timeout(40):
                async for ev in pub.events():
                    events.append(ev)
                    if ev["type"] == "frame":
                        seen.setdefault(ev["track"], set()).update(f["id"] for f in ev["faces"])
                        frames = sum(1 for e in events if e["type"] == "frame")
                        if len(seen) == 2 and all(seen.values()) and frames > 30:
                            break
        finally:
            await server.shutdown()
        return events

    events = run(main)
    by_track: dict[str, set[int]] = {}
    for e in events:
        VALIDATOR.validate(e)
        if e["type"] == "frame":
            by_track.setdefault(e["track"], set()).update(f["id"] for f in e["faces"])
    assert len(by_track) == 2
    a, b = by_track.values()
    assert a and b and not (a & b), by_track  # one person per track, never the same number


@pytest.mark.integration
def test_live_voice_prosody_and_active_speaker(
    config: Config, factory: SessionFactory, tmp_path: Path
) -> None:
    """A publisher with camera and microphone: prosody per hop, the speaking face named."""
    from .compose import two_speaker_video
    from .test_voice import SEGMENTS

    clip = tmp_path / "two_speakers.mp4"
    two_speaker_video(
        clip,
        ("face_recognition_short_hamilton_clip.mp4", (140, 0, 240), (3.9, 7.9)),
        ("mexca_test_video_audio_5_seconds.mp4", (204, 5, 200), (4.0, 5.0)),
        SEGMENTS,
    )

    async def main() -> list[dict[str, Any]]:
        server = await _server(config, factory)
        events: list[dict[str, Any]] = []
        try:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect_publisher(url, player_tracks(clip, audio=True)) as pub:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(21):  # the clip lasts 20 s
                        async for ev in pub.events():
                            events.append(ev)
        finally:
            await server.shutdown()
        return events

    events = run(main)
    for ev in events:
        VALIDATOR.validate(ev)
    side: dict[int, str] = {}
    for e in events:
        if e["type"] == "frame":
            for f in e["faces"]:
                side[f["id"]] = "left" if (f["box"][0] + f["box"][2]) / 2 < 0.5 else "right"
    prosody = [e for e in events if e["type"] == "prosody"]
    speaking = [p for p in prosody if p["speaking"]]
    assert len(prosody) >= 40 and len(speaking) >= 0.5 * len(prosody)
    assert any(e["type"] == "speaker.active" and e["face_id"] for e in events)
    f0 = [p["pitch"]["median_hz"] for p in speaking if p["pitch"]["median_hz"]]
    assert f0 and 80 < float(np.median(f0)) < 400
    # Finished speech turns, each with its estimated vocal activation once 0.8 s long. The clip's
    # one audio track is never silent for 0.5 s (two voices take turns on it, not diarized
    # live), so its speech comes in parts of at most 10 s.
    turns = [e for e in events if e["type"] == "voice.turn"]
    valued = [t for t in turns if t["estimated_vocal_activation"] is not None]
    print(
        f"live: {len(turns)} voice.turn events, {len(valued)} with an estimated vocal activation: "
        + ", ".join(
            f"{t['start']:.1f}-{t['end']:.1f} s {t['estimated_vocal_activation']}" for t in turns
        )
    )
    assert valued and all(0 < t["end"] - t["start"] <= 10.3 for t in turns)
    assert all(t["end"] - t["start"] >= 0.8 for t in valued)
    # The clip's own clock: the audio starts with the media, so report time ~ media time.
    # Per voiced report: was the heard tile's face named? Within 1.5 s of a change of speaker
    # the 2.5 s matching window still holds the previous voice.
    verdicts = [
        (p["t"] - s, s, p["face_id"] is not None and side.get(p["face_id"]) == k)
        for p in speaking
        for s, e, k in SEGMENTS
        if s <= p["t"] < e
    ]
    right = sum(ok for _, _, ok in verdicts) / len(verdicts)
    steady = [ok for since, _, ok in verdicts if since >= 1.5]
    won = sum(
        2 * sum(ok for _, s, ok in verdicts if s == s0) > sum(1 for _, s, _ in verdicts if s == s0)
        for s0, _, _ in SEGMENTS
    )
    fps = [e["metrics"]["analysed_fps"] for e in events if e["type"] == "frame"]
    analysed = float(np.median(fps))
    print(
        f"live: {len(prosody)} prosody events, active speaker right for {right:.0%} "
        f"({sum(steady) / len(steady):.0%} from 1.5 s after each change; the heard face won "
        f"{won} of {len(SEGMENTS)} turns), analysed at {analysed:.1f} fps (median)"
    )
    # Live, mouths are sampled at the analysed rate from VP8 video and the two paths are aligned
    # by receive times. Measured over 16 runs: right for 65-92% (mean 78%; 85% offline), 79-100%
    # from 1.5 s after each change, 3-4 turns won. With the video's times 0.5 s off (a broken
    # alignment) the replayed matches gave 11-41% and 0-3 turns. Matching needs mouths at about
    # 25 fps (README): when a busy machine analyses fewer frames, only a lower floor holds.
    fast = analysed >= 20
    assert won >= (3 if fast else 2)
    assert sum(steady) / len(steady) >= (0.7 if fast else 0.5)
