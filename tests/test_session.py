"""Live behaviour in process (no network): the real LiveSession fed frames by the test harness.

Each test plays a gallery recording (A, B, C; A and B swap tiles at 3 s) through
`stream.live.testing.run_session` and checks the events a client would receive.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.types import VideoFrame
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
    schema,
)
from stream.live.session import Subscriber
from stream.live.testing import run_session
from stream.offline.media import read_frames
from stream.voice.prosody import ProsodyReport

from .test_gallery_view import build_gallery_video

VALIDATOR = jsonschema.Draft202012Validator(schema())
FPS = 8.0


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[VideoFrame]:
    path: Path = tmp_path_factory.mktemp("session") / "gallery.mp4"
    build_gallery_video(path, seconds=4.0)
    return list(read_frames(path, FPS))


def _run(
    stages: Stages, frames: list[VideoFrame] | dict[str, list[VideoFrame]], **kw: Any
) -> list[dict[str, Any]]:
    events, _ = asyncio.run(run_session(stages, video=frames, **kw))
    for ev in events:
        VALIDATOR.validate(ev)
    return events


def _frames(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "frame"]


SAMPLES: list[Event] = [
    SessionStarted("publisher", ["neutral"], "demo", [{"urls": "stun:x"}], viewer_token="t"),
    SessionStarted("viewer", ["neutral", "happiness"], "", []),
    Answer("v=0\r\n"),
    Frame("t1", 0.5, 640, 480, [{"id": 1, "name": "Face 1", "box": [0, 0, 1, 1], "excluded": True}],
          {"analysed_fps": 1.0, "received_frames": 1, "dropped_frames": 0, "queue_age_ms": 0.1,
           "latency_ms": 1.0, "detect_every": 1, "stage_ms": {"detect": 1.0}}),
    FaceSummaries([], {"faces": 0, "person_seconds": 0.0, "dominant": {"label": "uncertain",
                   "share": 0.0}, "shares": {}}),
    FaceRenamed(1, "Alice"),
    FaceExcluded(2, True),
    SessionReset(),
    Error("bad_json", "message is not valid JSON"),
    SessionSummary(1.5, [], {"faces": 0, "person_seconds": 0.0,
                   "dominant": {"label": "uncertain", "share": 0.0}, "shares": {}}),
    SessionEnded("publisher left"),
    Prosody("a1", None, None, ProsodyReport(1.0, 2.0, 0.0, False, None, None, None, None,
            -60.0, None, 1.0, 0, None).to_dict()),
    Prosody("a2", 1, "Face 1", ProsodyReport(3.0, 2.0, 0.9, True, 180.0, 6.0, 2.0, 0.8, -30.0,
            4.1, 0.1, 1, 0.3, tilt_db=-11.5, energy_range_db=17.0, activation=0.42).to_dict()),
    SpeakerActive("a1", 1, "Face 1", True, 0.4),
    SpeakerRenamed(2, "Caller"),
    VoiceTurnEnded("a1", 1.0, 3.2, 0.42, 1),
    VoiceTurnEnded("a2", 4.0, 4.5, None),
    Redirect("this worker is full", "http://b:8080/", "ws://b:8080/ws"),
    Wall([]),
    Gesture(1, "nod", 3.2, 4.1, 3, 6.5),
    AttentionDrop(2, 10.0, 13.4, 3.4),
]  # fmt: skip


def test_every_event_type_validates_against_the_schema() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)
    for i, ev in enumerate(SAMPLES):
        VALIDATOR.validate(envelope(ev, "session-1", i, 1.0))
    bad = envelope(FaceRenamed(0, "x"), "session-1", 0, 1.0)  # ids start at 1
    assert not VALIDATOR.is_valid(bad)
    overall = {"faces": 1, "person_seconds": 2.0, "shares": {"neutral": 0.2, "uncertain": 0.8}}
    honest = {"label": "neutral", "share": 0.2, "uncertain_share": 0.8}
    assert VALIDATOR.is_valid(
        envelope(FaceSummaries([], {**overall, "dominant": honest}), "s-1234567", 0, 1.0)
    )
    spoken = envelope(SAMPLES[12], "session-1", 0, 1.0)
    assert spoken["type"] == "prosody" and spoken["estimated_vocal_activation"] == 0.42
    assert not VALIDATOR.is_valid({**spoken, "estimated_vocal_activation": 1.5})  # -1..1
    wrong = {**honest, "uncertain_share": 1.8}
    assert not VALIDATOR.is_valid(
        envelope(FaceSummaries([], {**overall, "dominant": wrong}), "s-1234567", 0, 1.0)
    )


@pytest.mark.integration
def test_frames_in_events_out_with_stable_ids(stages: Stages, frames: list[VideoFrame]) -> None:
    events = _run(stages, frames)
    types = [e["type"] for e in events]
    assert types[0] == "session.started" and types[-2:] == ["session.summary", "session.ended"]
    fr = _frames(events)
    assert len(fr) == len(frames)  # nothing dropped: the harness waits for each frame
    assert {f["id"] for e in fr for f in e["faces"]} == {1, 2, 3}
    assert [e["seq"] for e in events] == list(range(len(events)))
    summary = events[-2]
    print(f"in-process session: {len(fr)} frames, summary {[f['id'] for f in summary['faces']]}")
    assert [f["id"] for f in summary["faces"]] == [1, 2, 3]
    assert all(f["visible_s"] > 3.0 for f in summary["faces"])
    # No audio: each face is a participant of its own, no voice linked.
    people = summary["participants"]
    assert [(p["face_id"], p["speaker_id"], p["vocal_activation"]) for p in people] == [
        (1, None, None),
        (2, None, None),
        (3, None, None),
    ]


@pytest.mark.integration
def test_rename_exclude_and_reset(stages: Stages, frames: list[VideoFrame]) -> None:
    events = _run(
        stages,
        frames,
        commands={
            6: [{"type": "rename", "id": 1, "name": "Alice"}, {"type": "exclude", "id": 2}],
            20: {"type": "reset"},
        },
    )
    types = [e["type"] for e in events]
    fr = _frames(events)
    i_rename, i_reset = types.index("face.renamed"), types.index("session.reset")
    before = [e for e in fr if e["seq"] < events[i_rename]["seq"]]
    between = [e for e in fr if events[i_rename]["seq"] < e["seq"] < events[i_reset]["seq"]]
    after = [e for e in fr if e["seq"] > events[i_reset]["seq"]]
    assert len(before) == 6 and len(between) == 14 and len(after) == len(frames) - 20
    assert all(f["name"] == "Face 1" for e in before for f in e["faces"] if f["id"] == 1)
    assert all(f["name"] == "Alice" for e in between for f in e["faces"] if f["id"] == 1)
    two = [f for e in between for f in e["faces"] if f["id"] == 2]
    assert two and all(f["excluded"] and "label" not in f for f in two)
    # After a reset, numbering restarts, names and exclusions are gone.
    ids_after = {f["id"] for e in after for f in e["faces"]}
    assert ids_after == {1, 2, 3}, ids_after
    assert all(f["name"] == f"Face {f['id']}" and not f["excluded"] for e in after
               for f in e["faces"])  # fmt: skip
    summary = events[-2]
    assert all(f["visible_s"] < 2.5 for f in summary["faces"])  # only since the reset


@pytest.mark.integration
def test_two_tracks_share_one_numbering(stages: Stages, frames: list[VideoFrame]) -> None:
    events = _run(stages, {"cam1": frames[:12], "cam2": frames[:12]})
    by_track: dict[str, set[int]] = {}
    for e in _frames(events):
        by_track.setdefault(e["track"], set()).update(f["id"] for f in e["faces"])
    assert len(by_track["cam1"]) == 3 and len(by_track["cam2"]) == 3
    assert not by_track["cam1"] & by_track["cam2"]  # session-wide numbers are unique


@pytest.mark.integration
def test_viewers_get_the_same_events(stages: Stages, frames: list[VideoFrame]) -> None:
    publisher, viewers = asyncio.run(run_session(stages, video=frames[:10], viewers=2))
    for v in viewers:
        assert v[0]["type"] == "session.started" and v[0]["role"] == "viewer"
        assert "viewer_token" not in v[0]
        assert [e["seq"] for e in v[1:]] == [e["seq"] for e in publisher[1:]]
    assert "viewer_token" in publisher[0]


def test_slow_subscriber_loses_frames_not_other_events() -> None:
    async def main() -> tuple[Subscriber, Subscriber, list[str], tuple[bool, bool]]:
        gate = asyncio.Event()
        sent: list[str] = []

        async def slow_send(msg: str) -> None:
            await gate.wait()
            sent.append(msg)

        frames_only = Subscriber(slow_send, "viewer", limit=3)
        for i in range(10):
            frames_only.offer({"type": "frame", "i": i})
        other = Subscriber(slow_send, "viewer", limit=3)
        for i in range(4):
            other.offer({"type": "face.renamed", "i": i})
        closed = (frames_only.closed, other.closed)
        gate.set()
        await frames_only.flush(1.0)
        await other.flush(1.0)
        return frames_only, other, sent, closed

    frames_only, _, sent, closed = asyncio.run(main())
    # Three frames were queued and seven dropped (counted): the newest events never wait.
    assert frames_only.dropped == 7
    # A subscriber that cannot keep up with non-droppable events is closed, not silently lossy.
    assert closed == (False, True)
    kinds = [json.loads(m)["type"] for m in sent]
    assert kinds.count("frame") == 3


def test_audio_backlog_is_bounded_and_drops_the_oldest() -> None:
    from stream.live.session import AUDIO_BACKLOG_S, _AudioBacklog
    from stream.live.source import ReceivedAudio
    from stream.voice.resample import array_frame

    async def main() -> tuple[_AudioBacklog, list[float]]:
        backlog = _AudioBacklog(AUDIO_BACKLOG_S)
        frames = [array_frame(np.zeros(960, np.float32), 48_000) for _ in range(200)]  # 4 s
        dropped = [backlog.put(ReceivedAudio(f, i * 0.02)) for i, f in enumerate(frames)]
        assert not any(dropped[:100]) and all(dropped[101:])
        backlog.close()
        got = []
        while (item := await backlog.get()) is not None:
            got.append(item.received)
        return backlog, got

    backlog, got = asyncio.run(main())
    assert backlog.gap and abs(backlog.dropped_s - 2.0) < 0.03
    assert len(got) == 100 and got[0] == pytest.approx(2.0) and got == sorted(got)  # newest 2 s
