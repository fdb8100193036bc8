"""The fake stages (stream/analysis/fakes.py) drive the real per-stream analysis in milliseconds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from stream.analysis.fakes import (
    FakeFace,
    FakeStages,
    expected_label,
    fake_audio_frames,
    fake_frames,
)
from stream.analysis.stream import StreamAnalysis
from stream.core.config import Config, load_config
from stream.vision.blendshapes import INDEX

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "configs" / "default.toml", env={})


def test_faces_in_identities_and_aggregates_out(cfg: Config) -> None:
    """Two people: each keeps one number, its expression follows the fake model, mouths are
    sampled and facial actions reach the aggregates (the real pipeline over fake models)."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0)
    analysis.add_voice("audio")  # mouths are measured while a voice may be matched to them

    def faces(i: int) -> list[FakeFace]:
        return [
            FakeFace(0, (30 + i, 40, 110 + i, 140), mouth=(i % 4) / 3),
            FakeFace(2, (180, 50, 260, 150)),
        ]

    t0 = time.perf_counter()
    people: dict[int, set[int]] = {}  # face number -> who was drawn there (by position)
    mouths = 0
    for frame in fake_frames(30, faces):
        result = analysis.push_video(frame)
        for f in result.faces:
            people.setdefault(f.number, set()).add(0 if f.box[0] < 150 else 2)
        mouths += sum(f.mouth is not None for f in result.faces)
    analysis.finish()
    ms = (time.perf_counter() - t0) * 1e3
    summary = analysis.summary()
    labels = {f["id"]: f["dominant"]["label"] for f in summary["faces"]}
    print(f"30 frames, 2 faces: {ms:.0f} ms; labels {labels}; actions {analysis.actions.keys()}")
    assert sorted(people) == [1, 2] and all(len(p) == 1 for p in people.values())
    who = {n: p.pop() for n, p in people.items()}
    assert labels == {n: expected_label(p) for n, p in who.items()}
    assert summary["faces"][0]["analysed_frames"] == 29  # confirmed on the 2nd frame
    assert mouths >= 50
    talker = next(n for n, p in who.items() if p == 0)
    jaw = {n: float(s.mean()[INDEX["jawOpen"]]) for n, s in analysis.actions.items()}
    assert jaw[talker] > 0.1 and jaw[3 - talker] == 0.0  # only the open mouth moves the jaw
    assert ms < 2000


def test_a_returning_person_keeps_their_number(cfg: Config) -> None:
    """Re-identification runs for real on the fake embeddings: red leaves, blue comes, red
    returns elsewhere and is Face 1 again."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0)

    def faces(i: int) -> list[FakeFace]:
        if i < 10:
            return [FakeFace(0, (20, 40, 100, 140))]
        if i < 20:
            return [FakeFace(2, (200, 40, 280, 140))]
        return [FakeFace(0, (200, 60, 280, 160))]

    seen = [[f.number for f in analysis.push_video(fr).faces] for fr in fake_frames(30, faces)]
    print(f"numbers per frame: {seen}")
    assert seen[5] == [1] and seen[15] == [2] and seen[29] == [1]


def test_a_voice_is_heard_and_two_tones_are_two_speakers(cfg: Config) -> None:
    """The fake voice chain: speech where the tone is, silence elsewhere; diarization of a file
    (one track) tells two voices apart."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0, online_speakers=False)
    voice = analysis.add_voice("audio")
    frames = fake_audio_frames([(0.5, 3.5, 180.0), (4.5, 7.5, 700.0)], 8.0)
    speaking = [
        (u.report.t, u.report.speaking)
        for frame in [*frames, None]
        for u in voice.push(frame, until=analysis.voice_until)
    ]
    analysis.finish()
    segments = analysis.diarized_segments()
    shown = [(round(s, 2), round(e, 2), n) for s, e, n in segments]
    print(f"{len(speaking)} reports; segments {shown}")
    assert any(s for t, s in speaking if 2.0 < t < 3.5)
    assert not any(s for t, s in speaking if t < 0.4)
    assert {n for _, _, n in segments} == {1, 2}
    first = [n for s, e, n in segments if e <= 4.0]
    second = [n for s, e, n in segments if s >= 4.0]
    assert set(first) == {1} and set(second) == {2}


def test_fake_stages_need_no_model_files(cfg: Config) -> None:
    stages = FakeStages(cfg.replace("models", dir="/nonexistent"))
    assert stages.supported_labels and stages.speaker_embedder is not None
    assert np.array_equal(stages.supported, stages.expression.supported)
