"""Behaviour signals through the analysis: the pipeline hook, StreamAnalysis summaries, CSV and
JSON columns, frame events and the new event types (fake stages: 5-point head pose)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.analysis.report import csv_text
from stream.analysis.stages import Stages
from stream.analysis.stream import StreamAnalysis
from stream.core.config import Config
from stream.core.types import MediaInfo, VideoFrame
from stream.live.cluster import WallLine
from stream.live.events import Wall, envelope, schema
from stream.live.testing import run_session
from stream.vision.headpose import CanonicalFace

from .conftest import MODELS


@pytest.fixture(scope="module")
def canonical() -> CanonicalFace:
    path = MODELS / "face_landmarker.task"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return CanonicalFace.from_task(path)


def _analysed(canonical: CanonicalFace, enabled: bool = True, live: bool = False) -> StreamAnalysis:
    config = Config().replace("behaviour", enabled=enabled)
    stages = FakeStages(config, canonical=canonical)
    analysis = StreamAnalysis(stages, fps=10, live=live)
    faces = [FakeFace(0, (30, 40, 110, 140)), FakeFace(1, (190, 40, 270, 140))]
    for frame in fake_frames(30, faces):
        analysis.push_video(frame)
    analysis.finish()
    return analysis


def test_signals_on_every_face_and_frame(canonical: CanonicalFace) -> None:
    config = Config()
    stages = FakeStages(config, canonical=canonical)
    analysis = StreamAnalysis(stages, fps=10)
    faces = [FakeFace(0, (30, 40, 110, 140))]
    results = [analysis.push_video(f) for f in fake_frames(12, faces)]
    with_faces = [r for r in results if r.faces]
    assert with_faces
    for r in with_faces:
        assert "behaviour" in r.timings_ms
        for f in r.faces:
            assert f.signals is not None
            js = f.signals.to_json()
            assert set(js) >= {"head", "gaze", "attention", "looking_away"}
            # The fake mesh is not a face: the pose comes from the detector's points or flow.
            assert js["head"]["source"] in ("points", "flow")  # type: ignore[index]
    print("behaviour ms per frame", [round(r.timings_ms.get("behaviour", 0), 2) for r in results])


def test_summary_csv_json(canonical: CanonicalFace) -> None:
    analysis = _analysed(canonical)
    info = MediaInfo(Path("x.mp4"), "video", 320, 240, 3.0, 10.0, "fake", False)
    a = analysis.result(info, 1.0)
    d = a.to_dict()
    assert d["behaviour_notes"]
    for face in d["faces"]:
        b = face["behaviour"]
        print(face["id"], b)
        assert 0.0 <= b["attention_share"] <= 1.0
        assert b["posture_visible_share"] is None  # no posture model in the fakes...
        assert b["leaning_in_share"] is None  # ...so no share of it
        assert isinstance(face["gestures"], list) and isinstance(face["attention_drops"], list)
    rows = list(csv.DictReader(io.StringIO(csv_text(a))))
    face_rows = [r for r in rows if r["face_id"] and r["label"]]
    assert face_rows
    assert all(r["head_yaw"] and r["attention"] for r in face_rows)
    assert all(r["posture_visible"] == "" for r in face_rows)


def test_off_and_live(canonical: CanonicalFace) -> None:
    off = _analysed(canonical, enabled=False)
    assert not off.behaviour.faces
    assert "behaviour" not in off.summary()["faces"][0]
    live = _analysed(canonical, live=True)
    assert live.behaviour.faces and not any(fb.rows for fb in live.behaviour.faces.values())
    assert "behaviour" in live.summary()["faces"][0]


def test_live_session_publishes_behaviour(canonical: CanonicalFace) -> None:
    """Frame events carry head/gaze/attention per face; a face outside a narrow cone gives an
    attention_drop event (ended at close); every event validates against the schema."""
    config = Config().replace("behaviour", cone_yaw_deg=5.0, drop_min_s=0.5)
    stages = FakeStages(config, canonical=canonical)
    faces = [FakeFace(0, (30, 40, 110, 140)), FakeFace(1, (120, 40, 200, 140))]
    events, _ = asyncio.run(run_session(stages, video=fake_frames(30, faces)))
    validator = Draft202012Validator(schema())
    for ev in events:
        validator.validate(ev)
    seen = [f for e in events if e["type"] == "frame" for f in e["faces"]]
    assert seen and all({"head", "gaze", "attention", "looking_away"} <= set(f) for f in seen)
    drops = [e for e in events if e["type"] == "attention_drop"]
    print("attention drops", drops)
    assert drops and all(d["behaviour"] == "looking away" for d in drops)
    away = {f["id"] for f in seen if f["looking_away"]}
    assert {d["face"] for d in drops} <= away
    summary = next(e for e in events if e["type"] == "session.summary")
    assert all(f["behaviour"]["looking_away_drops"] >= 0 for f in summary["faces"])
    # The wall line: how many of the latest frame's faces look toward the screen.
    session = SimpleNamespace(id="s-1", purpose="test", via="test", started=0.0, clock=lambda: 3.0)
    line = WallLine(session, "w1", 0.5)  # type: ignore[arg-type]
    for ev in events:
        line.feed(ev)
    att = line.to_dict()["attention"]
    last = [f for f in _last_frame(events)["faces"] if not f["excluded"]]
    print("wall attention", att)
    assert att["faces"] == len(last) and att["looking"] == sum(not f["looking_away"] for f in last)
    assert 0.0 <= att["share"] <= 1.0
    validator.validate(envelope(Wall([line.to_dict()]), "--------", 0, 1.0))


def _last_frame(events: list[dict[str, Any]]) -> dict[str, Any]:
    return [e for e in events if e["type"] == "frame"][-1]


def test_python_api_exposes_behaviour(canonical: CanonicalFace) -> None:
    import stream

    cfg = Config()
    an = stream.Analyzer(config=cfg, stages=FakeStages(cfg, canonical=canonical), name="fake")
    events: list[Any] = []
    for frame in fake_frames(20, [FakeFace(0, (30, 40, 110, 140))]):
        events += an.push_video(frame.image, frame.t)
    result = an.close()
    face = result.faces[0]
    print("API behaviour", face.behaviour)
    assert face.behaviour is not None and 0.0 <= face.behaviour["attention_share"] <= 1.0
    assert isinstance(face.gestures, list) and isinstance(face.attention_drops, list)
    frames = [e for e in events if getattr(e, "faces", None)]
    assert frames and all("head" in f for e in frames for f in e.faces)


@pytest.mark.integration
def test_real_clip_analyze_and_live_gestures(config: Config, stages: Stages) -> None:
    """analyze of a real clip gives head pose, attention and posture in CSV and JSON; a live
    session over a real photo turned in 3D with scripted nods and shakes publishes gesture
    events that validate against the schema."""
    from stream.analysis.report import json_text
    from stream.offline.analyze import analyze_file

    from .compose_heads import HeadRenderer, photo_faces, script
    from .conftest import VIDEO

    a = analyze_file(VIDEO / "fer_woman2.mp4", config, stages)
    rows = [r for r in csv.DictReader(io.StringIO(csv_text(a))) if r["label"]]
    filled = [r for r in rows if r["head_yaw"] and r["attention"] and r["gaze_x"]]
    posture = [r for r in rows if r["posture_visible"]]
    d = json.loads(json_text(a))
    b = d["faces"][0]["behaviour"]
    print(f"fer_woman2: {len(filled)}/{len(rows)} rows with head pose; {len(posture)} with posture")
    print("fer_woman2 behaviour", b, "stage ms", a.stage_ms)
    assert rows and len(filled) == len(rows) and posture
    assert 0.0 <= b["attention_share"] <= 1.0 and b["blink_method"] in ("events", "occupancy")
    assert d["behaviour_notes"] and "behaviour" in a.stage_ms

    vm = stages.vision_models
    assert stages.action_model is not None
    img, lm = photo_faces(vm.detector, stages.action_model)[0]
    renderer = HeadRenderer(img, lm, CanonicalFace.from_task(MODELS / "face_landmarker.task"))
    ypr, truth = script(100, 20.0)
    frames = [
        VideoFrame(renderer.render(float(y), float(p), float(r)), i / 10)
        for i, (y, p, r) in enumerate(ypr)
    ]
    assert len(vm.detector(frames[0])) >= 1
    events, _ = asyncio.run(run_session(stages, video=frames))
    validator = Draft202012Validator(schema())
    for ev in events:
        validator.validate(ev)
    gestures = [e for e in events if e["type"] == "gesture"]
    print(f"live: {len(gestures)} gesture events for {len(truth)} scripted: {gestures}")
    assert gestures and {g["gesture"] for g in gestures} <= {"nod", "shake"}
    heads = [f["head"] for e in events if e["type"] == "frame" for f in e["faces"] if "head" in f]
    assert heads and {h["source"] for h in heads} >= {"landmarks", "flow"}
