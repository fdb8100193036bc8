"""Frames in, results out: mailbox, frame budget, flow propagation, partial expression updates."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream.analysis.budget import FrameBudget
from stream.core.config import LiveConfig
from stream.core.types import FaceDetections, FaceSample, VideoFrame
from stream.live.mailbox import LatestMailbox
from stream.vision.pipeline import FaceResult, FrameResult, VisionPipeline

from .conftest import MEDIA, imread


def test_mailbox_keeps_only_the_newest() -> None:
    async def main() -> tuple[list[int], int, int]:
        box: LatestMailbox[int] = LatestMailbox()
        got = []
        for i in range(5):
            box.put(i)  # a slow consumer: four of these are replaced before being read
        got.append(await box.get())
        box.put(5)
        got.append(await box.get())
        box.close()
        with pytest.raises(EOFError):
            await box.get()
        return got, box.received, box.dropped

    assert asyncio.run(main()) == ([4, 5], 6, 4)


def test_mailbox_get_waits_for_a_put() -> None:
    async def main() -> int:
        box: LatestMailbox[int] = LatestMailbox()
        waiter = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)  # let the consumer block
        assert not waiter.done()
        box.put(7)
        return await waiter

    assert asyncio.run(main()) == 7


def _result(detect_ms: float, emotion_ms: float, fresh: list[int]) -> FrameResult:
    """A frame result with four faces and the given stage times."""
    z8 = np.zeros(8, np.float32)
    faces = [
        FaceResult(
            n,
            np.zeros(4, np.float32),
            np.zeros((5, 2), np.float32),
            1.0,
            z8,
            FaceSample(n, "neutral", 0.9, z8, z8, np.zeros(2, np.float32), (0, 0, 1, 1)),
            n in fresh,
        )
        for n in (1, 2, 3, 4)
    ]
    timings = {"detect": detect_ms, "track": 0.0, "emotion": emotion_ms, "smooth": 0.1}
    return FrameResult(0.0, 640, 480, faces, FaceDetections.empty(), timings, 0, len(fresh))


def test_budget_detects_less_often_when_time_is_short() -> None:
    cfg = LiveConfig(max_fps=15, emotion_fps=5, detect_every_max=4)  # 53 ms per frame
    b = FrameBudget(cfg)
    for i in range(10):
        b.observe(i / 15, _result(detect_ms=20.0, emotion_ms=12.0, fresh=[1, 2, 3, 4]), True)
    assert b.detect_every == 1  # 20 + 4 faces * 3 ms * 5/15 fits easily
    for i in range(10):
        b.observe(i / 15, _result(detect_ms=120.0, emotion_ms=12.0, fresh=[1, 2, 3, 4]), True)
    assert b.detect_every == 3  # detection alone exceeds the frame: spread it out
    plans = []
    for i in range(6):
        detect, _ = b.plan(i / 15, [1, 2, 3, 4])
        plans.append(detect)
        b.observe(i / 15, _result(120.0 if detect else 0.0, 12.0, [1, 2, 3, 4]), detect)
    assert plans == [False, False, True, False, False, True]  # every third frame


def test_budget_updates_expressions_round_robin() -> None:
    cfg = LiveConfig(max_fps=15, emotion_fps=15)
    b = FrameBudget(cfg)
    b.face_ms.add(20.0)  # 20 ms per face: only 2 of 4 fit in a 53 ms frame
    b.detect_ms.add(10.0)
    seen: list[set[int]] = []
    for i in range(4):
        t = i / 15
        _, chosen = b.plan(t, [1, 2, 3, 4])
        seen.append(chosen)
        b.observe(t, _result(10.0, 20.0 * len(chosen), sorted(chosen)), True)
    assert all(len(c) == 2 for c in seen)
    assert seen[0] | seen[1] == {1, 2, 3, 4}  # oldest first: everyone within two frames


@pytest.mark.integration
def test_flow_moves_faces_and_partial_expressions_carry_over(pipeline: VisionPipeline) -> None:
    img = imread(MEDIA / "identities/faceapijs/bbt_group1.jpg")
    first = pipeline.process(VideoFrame(img, 0.0))
    first = pipeline.process(VideoFrame(img, 0.1))  # confirmed on the second sighting
    assert len(first.faces) == 4
    shifted = np.zeros_like(img)
    shifted[:, 12:] = img[:, :-12]  # the whole picture moves 12 px right
    keep = {first.faces[0].number}
    moved = pipeline.process(VideoFrame(shifted, 0.2), detect=False, emotion_for=keep)
    assert "flow" in moved.timings_ms and "detect" not in moved.timings_ms
    assert [f.number for f in moved.faces] == [f.number for f in first.faces]
    dx = [m.box[0] - f.box[0] for m, f in zip(moved.faces, first.faces, strict=True)]
    assert all(abs(d - 12) < 2.5 for d in dx), dx
    assert [f.fresh for f in moved.faces] == [f.number in keep for f in moved.faces]
    assert moved.emotions == 1
    carried = moved.faces[1]
    assert carried.sample.label == first.faces[1].sample.label
    assert carried.sample.box != first.faces[1].sample.box  # the box moved with the face
