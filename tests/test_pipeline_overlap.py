"""VisionPipeline(overlap=True) (files) gives the same results as the sequential pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.core.config import Config, load_config
from stream.vision.pipeline import FrameResult

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "configs" / "default.toml", env={})


def _key(r: FrameResult) -> list[tuple[object, ...]]:
    return [
        (
            f.number,
            f.box.tolist(),
            f.sample.label,
            f.sample.probs.tolist(),
            f.fresh,
            None if f.actions is None else f.actions.tolist(),
            f.actions_fresh,
        )
        for f in r.faces
    ]


def test_overlap_gives_the_sequential_results(cfg: Config) -> None:
    stages = FakeStages(cfg)
    seq, par = stages.vision(), stages.vision()
    par.overlap = True
    threads: set[str] = set()
    expressions = par._expressions

    def recorded(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return expressions(*args)

    par._expressions = recorded  # type: ignore[method-assign,assignment]

    def faces(i: int) -> list[FakeFace]:
        return [
            FakeFace(0, (30 + i, 40, 110 + i, 140), mouth=(i % 4) / 3),
            FakeFace(2, (180, 50, 260, 150)),
            FakeFace(1, (300, 60, 360, 130 + i % 3)),
        ]

    frames = 0
    for k, frame in enumerate(fake_frames(24, faces)):
        # Detection on some frames only, expressions for a changing subset of the faces.
        detect = k % 3 == 0
        due = None if k % 2 == 0 else {1 + k % 3}
        a = seq.process(frame, detect=detect, emotion_for=due)
        b = par.process(frame, detect=detect, emotion_for=due)
        assert _key(a) == _key(b)
        assert set(a.timings_ms) == set(b.timings_ms)
        assert b.timings_ms["total"] >= max(v for k2, v in b.timings_ms.items() if k2 != "total")
        frames += len(a.faces) > 0
    assert frames >= 20
    # The expression model did run beside the rest, on the process's expression helper.
    assert any(name.startswith("expression") for name in threads)
    print(f"{frames} frames with faces: identical results sequential and overlapped")


def test_an_expression_error_reaches_the_caller(cfg: Config) -> None:
    stages = FakeStages(cfg)
    p = stages.vision()
    p.overlap = True

    def boom(image: np.ndarray, faces: object) -> object:
        raise RuntimeError("expression model failed")

    p.emotion = boom  # type: ignore[assignment]
    frames = fake_frames(3, lambda i: [FakeFace(0, (30, 40, 110, 140))])
    with pytest.raises(RuntimeError, match="expression model failed"):
        for frame in frames:
            p.process(frame)
