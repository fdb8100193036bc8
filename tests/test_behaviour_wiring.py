"""Behaviour signals through the analysis: the pipeline hook, StreamAnalysis summaries, CSV and
JSON columns, frame events and the new event types (fake stages: 5-point head pose)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.analysis.report import csv_text
from stream.analysis.stream import StreamAnalysis
from stream.core.config import Config
from stream.core.types import MediaInfo
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
        assert b["posture_visible_share"] == 0.0  # no posture model in the fakes...
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
