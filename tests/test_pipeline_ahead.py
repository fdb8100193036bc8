"""Files start the detector one frame ahead (VideoTracks.ahead -> VisionPipeline.detect_ahead):
the same results as detecting in turn; and FixedSchedule's confident detection rate."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.analysis.schedule import FixedSchedule
from stream.analysis.stream import StreamAnalysis
from stream.core.config import Config, load_config
from stream.core.errors import MediaError
from stream.core.timing import FrameGrid
from stream.core.types import FaceDetections, VideoFrame
from stream.offline.analyze import _look_ahead
from stream.vision.pipeline import Detector, FaceResult, FrameResult, VisionPipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "configs" / "default.toml", env={})


def _faces(i: int) -> list[FakeFace]:
    return [
        FakeFace(0, (30 + i, 40, 110 + i, 140)),
        FakeFace(2, (180, 50, 260, 150)),
        FakeFace(1, (300, 60, 360, 130 + i % 3)),
    ]


def _key(r: FrameResult) -> list[tuple[object, ...]]:
    return [(f.number, f.box.tolist(), f.sample.label, f.fresh) for f in r.faces]


def test_detecting_ahead_gives_the_same_results_off_the_main_thread(cfg: Config) -> None:
    frames = list(fake_frames(30, _faces, fps=30.0))
    stages = FakeStages(cfg)

    def run(ahead: bool) -> tuple[list[list[tuple[object, ...]]], list[str]]:
        a = StreamAnalysis(stages, 30.0, config=cfg, schedule=lambda: FixedSchedule(10, 10))
        pipeline = a.video.pipeline("video")
        assert isinstance(pipeline, VisionPipeline)
        threads: list[str] = []
        detector: Detector = pipeline.detector

        def detect(frame: VideoFrame) -> FaceDetections:
            threads.append(threading.current_thread().name)
            return detector(frame)

        pipeline.detector = detect
        keys = []
        for k, frame in enumerate(frames):
            if ahead and k + 1 < len(frames):
                a.video.ahead("video", frames[k + 1])
            keys.append(_key(a.push_video(frame)))
        return keys, threads

    plain, main_only = run(False)
    ahead, threads = run(True)
    assert ahead == plain
    assert sum(len(k) for k in plain) >= 60
    # Detection on the first two frames (no confirmed face yet: the schedule cannot know), then
    # 10/s at 30 fps; every run after the first two started ahead, and none was wasted.
    assert len(main_only) == len(threads) == 11
    assert all(t == "MainThread" for t in main_only)
    assert [t.startswith("detect-ahead") for t in threads] == [False, False] + [True] * 9
    print(f"\ndetector runs: {len(threads)}, ahead: {sum(t != 'MainThread' for t in threads)}")


def test_an_unused_run_ahead_is_dropped(cfg: Config) -> None:
    frames = list(fake_frames(4, _faces))
    p = FakeStages(cfg).vision()
    p.detect_ahead(frames[2])
    first = p.process(frames[0])  # not the frame started ahead: detects itself
    assert len(first.detections) == 3
    p.process(frames[3])  # passed over frame 2: its run is dropped
    assert p._ahead == []


def _result(t: float, boxes: dict[int, tuple[float, ...]], tentative: int = 0) -> FrameResult:
    faces = [
        FaceResult(n, np.array(b, np.float32), np.zeros((5, 2), np.float32), 0.9, None, None)  # type: ignore[arg-type]
        for n, b in boxes.items()
    ]
    ids = np.array([*boxes, *([-1] * tentative)], np.int64)
    k = len(ids)
    dets = FaceDetections(
        np.zeros((k, 4), np.float32), np.ones(k, np.float32), np.zeros((k, 5, 2), np.float32), ids
    )
    return FrameResult(t, 640, 480, faces, dets)


def test_confident_tracking_detects_less_often_and_a_new_face_brings_it_back() -> None:
    s = FixedSchedule(detect_fps=10, emotion_fps=10, confident_detect_fps=2)
    box: dict[int, tuple[float, ...]] = {1: (100.0, 100.0, 200.0, 200.0)}
    detected = []
    for i in range(60):  # 2 s at 30 fps
        t = i / 30
        d, _ = s.plan(t, [1])
        new = 1 if i == 51 else 0  # a new (tentative) face on the detection at 1.7 s
        s.observe(t, _result(t, box, tentative=new), d)
        detected.append(d)
    times = [round(i / 30, 2) for i, d in enumerate(detected) if d]
    # 10/s until two detections in a row found what the flow followed, then every 0.5 s; the
    # new face puts it back to 10/s until two detections agree again.
    assert times == [0.0, 0.1, 0.2, 0.7, 1.2, 1.7, 1.8, 1.9]
    assert s.confident and not s.detect_due(2.0) and s.detect_due(2.4)
    moved = FixedSchedule(10, 10, 2)
    for i in range(9):  # the followed box never matches the detection: no confidence
        t = i / 30
        d, _ = moved.plan(t, [1])
        step: dict[int, tuple[float, ...]] = {1: (100.0 + 40 * i, 100.0, 200.0 + 40 * i, 200.0)}
        moved.observe(t, _result(t, step), d)
    assert not moved.confident
    with pytest.raises(ValueError):
        FixedSchedule(10, 10, -1)


def test_look_ahead_pairs_frames_and_raises_after_the_last_good_frame() -> None:
    img = np.zeros((4, 4, 3), np.uint8)

    def frames() -> object:
        for i in range(3):
            yield VideoFrame(img, i / 10)
        raise MediaError("broken")

    seen = []
    with pytest.raises(MediaError):
        for frame, on_grid, nxt in _look_ahead(frames(), FrameGrid(10)):  # type: ignore[arg-type]
            seen.append((frame.t, on_grid, None if nxt is None else nxt[0].t))
    assert seen == [(0.0, True, 0.1), (0.1, True, 0.2), (0.2, True, None)]


def _detections(s: FixedSchedule, seconds: float = 1.5) -> list[tuple[float, bool]]:
    """(time, coarse?) of each detection `s` plans for one still face at 30 fps."""
    box: dict[int, tuple[float, ...]] = {1: (100.0, 100.0, 200.0, 200.0)}
    plans = []
    for i in range(round(seconds * 30)):
        t = i / 30
        d, _ = s.plan(t, [1])
        if d:
            plans.append((round(t, 2), s.coarse_now))
        s.observe(t, _result(t, box), d)
    return plans


def test_coarse_detections_between_whole_frame_ones_while_confident() -> None:
    s = FixedSchedule(detect_fps=10, emotion_fps=10, confident_detect_fps=2, coarse=True)
    plans = _detections(s)
    # Detection stays at 10/s; once confident, only every 0.5 s on the whole frame.
    assert [t for t, _ in plans] == [round(k / 10, 2) for k in range(15)]
    assert [t for t, coarse in plans if not coarse] == [0.0, 0.1, 0.2, 0.7, 1.2]


def test_a_coarse_detection_runs_at_full_scale_where_faces_would_be_small(cfg: Config) -> None:
    frames = list(fake_frames(6, _faces, fps=10.0, size=(480, 240)))  # smallest face 60x70
    p = FakeStages(cfg).vision()
    used: list[str] = []
    full = p.detector

    def coarse(frame: VideoFrame) -> FaceDetections:
        used.append("coarse")
        return full(frame)

    def whole(frame: VideoFrame) -> FaceDetections:
        used.append("full")
        return full(frame)

    p.detector = whole
    p.coarse = (coarse, 480)  # scale 1: faces stay >= 48 px
    p.process(frames[0], coarse=True)  # no faces known yet: full scale
    p.process(frames[1], coarse=True)
    p.detect_ahead(frames[2], coarse=True)
    p.process(frames[2], coarse=True)
    p.coarse = (coarse, 240)  # scale 0.5: the 60 px face would be 30 px
    p.process(frames[3], coarse=True)
    p.process(frames[4], coarse=False)
    assert used == ["full", "coarse", "coarse", "full", "full"]


def test_opencv_threads_are_set_for_the_block_and_restored() -> None:
    import cv2

    from stream.offline.analyze import opencv_threads

    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before


def test_confident_coarse_detections_at_their_own_rate() -> None:
    s = FixedSchedule(10, 10, confident_detect_fps=2, coarse=True, confident_coarse_fps=5)
    plans = _detections(s)
    # 10/s until confident (after 0.2 s); then the whole frame every 0.5 s and coarse
    # detections 0.2 s after the last detection in between.
    assert [t for t, coarse in plans if not coarse] == [0.0, 0.1, 0.2, 0.7, 1.2]
    assert [t for t, coarse in plans if coarse] == [0.4, 0.6, 0.9, 1.1, 1.4]
    with pytest.raises(ValueError, match="confident_coarse_fps"):
        FixedSchedule(10, 10, 2, True, -1)
