"""Frames in, results out: mailbox, frame budget, flow propagation, partial expression updates."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

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
