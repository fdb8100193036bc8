"""Fast unit tests of the pure stages: alignment, types, smoothing, aggregation, labels."""

from __future__ import annotations

import numpy as np
import pytest

from stream.analysis.aggregate import Aggregator
from stream.core.config import SmoothingConfig
from stream.core.labels import LABELS, UNCERTAIN, canonical, estimate_valence_arousal
from stream.core.types import FaceDetections, FaceSample, VideoFrame
from stream.vision.align import ARCFACE_112, crop_squares, similarity_transform, square_boxes
from stream.vision.smoothing import ExpressionSmoother
from stream.vision.tracker import iou_matrix, max_cosine


def onehot(label: str, p: float = 1.0) -> np.ndarray:
    v = np.full(8, (1 - p) / 6, np.float32)
    v[7] = 0.0  # contempt unsupported
    v[LABELS.index(label)] = p
    return v


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_112 @ (scale * rot).T + shift).astype(np.float32)
    m = similarity_transform(src, ARCFACE_112)
    back = src @ m[:, :2].T + m[:, 2]
    assert np.abs(back - ARCFACE_112).max() < 1e-3


def test_square_crop_keeps_aspect_and_pads_outside() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255
    boxes = np.array([[80, 20, 120, 60]], np.float32)  # centred on the white/black edge
    assert square_boxes(boxes, 2.0).tolist() == [[60.0, 0.0, 140.0, 80.0]]
    crop = crop_squares(img, boxes, 40)[0]
    assert crop.shape == (40, 40, 3)
    assert crop[:, :15].min() == 255 and crop[:, 25:].max() == 0
    edge = crop_squares(img, np.array([[-50, -50, 50, 50]], np.float32), 10)[0]
    assert edge[:4, :4].max() == 0 and edge[6:, 6:].min() == 255  # outside the frame is black


def test_face_detections_validates() -> None:
    ok = FaceDetections(
        np.array([[0, 0, 10, 10]], np.float32),
        np.ones(1, np.float32),
        np.zeros((1, 5, 2), np.float32),
    )
    assert ok.track_ids.tolist() == [-1] and len(ok.select(np.array([False]))) == 0
    with pytest.raises(ValueError, match="boxes"):
        FaceDetections(
            np.zeros((1, 3), np.float32), np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32)
        )
    with pytest.raises(ValueError, match="x2 >= x1"):
        FaceDetections(
            np.array([[10, 0, 0, 10]], np.float32),
            np.ones(1, np.float32),
            np.zeros((1, 5, 2), np.float32),
        )
    with pytest.raises(ValueError, match="uint8"):
        VideoFrame(np.zeros((4, 4, 3), np.float32), 0.0)


def test_iou_and_cosine() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(iou_matrix(a, b), [[1 / 3, 0.0]])
    g = np.eye(3, dtype=np.float32)
    assert max_cosine(np.array([0, 1, 0], np.float32), g) == 1.0
    assert max_cosine(np.array([0, 1, 0], np.float32), np.zeros((0, 3), np.float32)) == -1.0


def test_labels_and_valence_arousal() -> None:
    assert canonical("Happy") == "happiness" and canonical("fearful") == "fear"
    with pytest.raises(ValueError):
        canonical("boredom")
    supported = np.array([True] * 7 + [False])
    va = estimate_valence_arousal(np.stack([onehot("happiness"), onehot("sadness")]), supported)
    assert va[0, 0] > 0.5 and va[1, 0] < -0.5 and va[0, 1] > va[1, 1]


def _run(smoother: ExpressionSmoother, fps: float, seconds: float) -> dict[float, np.ndarray]:
    out = {}
    for i in range(int(seconds * fps) + 1):
        t = i / fps
        label = "neutral" if t < 1.0 else "happiness"
        out[round(t, 3)] = smoother.update(1, t, onehot(label, 0.9), np.zeros(2, np.float32)).probs
    return out


def test_smoothing_does_not_depend_on_the_analysis_rate() -> None:
    """A step seen at 5 and at 30 fps gives nearly the same curve in media time.

    At 5 fps the step is only known to within 0.2 s, so early differences of about 0.1 remain;
    a per-frame smoothing factor (the usual EMA) would differ by far more.
    """
    cfg = SmoothingConfig(tau_s=0.5)
    slow = _run(ExpressionSmoother(cfg), 5, 3)
    fast = _run(ExpressionSmoother(cfg), 30, 3)
    for t, tol in ((1.2, 0.12), (1.6, 0.05), (2.0, 0.03), (3.0, 0.01)):
        assert np.abs(slow[t] - fast[t]).max() < tol, t
    i = LABELS.index("happiness")
    assert 0.3 < slow[1.2][i] < 0.6 and 0.3 < fast[1.2][i] < 0.6  # about 1 - exp(-0.4)
    # The usual per-frame EMA (alpha 0.33 at both rates) is rate-dependent by comparison.
    ema = {}
    for fps in (5, 30):
        y = onehot("neutral", 0.9)
        for k in range(int(1.2 * fps) + 1):
            y = y + 0.33 * (onehot("neutral" if k / fps < 1.0 else "happiness", 0.9) - y)
        ema[fps] = y[i]
    assert abs(ema[5] - ema[30]) > 0.3


def test_hysteresis_and_uncertain() -> None:
    sm = ExpressionSmoother(SmoothingConfig(tau_s=0.0, hysteresis=0.1, uncertain_below=0.4))
    z = np.zeros(2, np.float32)
    assert sm.update(1, 0.0, onehot("sadness", 0.5), z).label == "sadness"
    p = np.zeros(8, np.float32)
    p[[LABELS.index("sadness"), LABELS.index("anger"), 0]] = (0.45, 0.5, 0.05)
    assert sm.update(1, 0.1, p, z).label == "sadness"  # anger leads by < 0.1: keep sadness
    assert sm.update(1, 0.2, onehot("anger", 0.7), z).label == "anger"
    flat = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0], np.float32)
    s = sm.update(1, 0.3, flat, z)
    assert s.label == UNCERTAIN and s.confidence == pytest.approx(0.3)
    assert sm.update(1, 9.0, onehot("fear"), z).label == "fear"  # long gap: fresh start


def _sample(number: int, label: str) -> FaceSample:
    p = onehot(label if label != UNCERTAIN else "neutral", 0.9)
    return FaceSample(number, label, 0.9, p, p, np.zeros(2, np.float32), (0, 0, 1, 1))


def test_aggregation_shares_follow_the_definition() -> None:
    agg = Aggregator(nominal_dt=0.1, max_gap_s=0.5, supported=np.array([True] * 7 + [False]))
    # Face 1: happiness 0.0-0.3 s, surprise 0.3-0.4 s; Face 2 only at 0.2 s (neutral).
    agg.add_frame(0.0, [_sample(1, "happiness")])
    agg.add_frame(0.1, [_sample(1, "happiness")])
    agg.add_frame(0.2, [_sample(1, "happiness"), _sample(2, "neutral")])
    agg.add_frame(0.3, [_sample(1, "surprise")])
    agg.add_frame(2.0, [_sample(1, UNCERTAIN)])  # after a 1.7 s gap: 0.3 s credited only 0.5 s
    agg.finish(end_t=2.05)
    f1, f2 = agg.faces()
    assert f1.visible_s == pytest.approx(0.3 + 0.5 + 0.05)
    assert f1.dominant == "surprise" and f1.dominant_share == pytest.approx(0.5 / 0.85)
    assert f1.shares["happiness"] == pytest.approx(0.3 / 0.85)
    assert sum(f1.shares.values()) == pytest.approx(1.0)
    assert f1.mean_probabilities["contempt"] is None
    assert f2.visible_s == pytest.approx(0.1)
    assert (f2.dominant, f2.dominant_share) == ("neutral", 1.0)
    o = agg.overall()
    assert o.faces == 2 and o.person_seconds == pytest.approx(0.95)
    assert o.dominant == "surprise" and o.dominant_share == pytest.approx(0.5 / 0.95)


def test_only_uncertain_gives_uncertain_dominant() -> None:
    agg = Aggregator(0.1, 0.5, np.ones(8, bool))
    agg.add_frame(0.0, [_sample(1, UNCERTAIN)])
    agg.finish()
    (f,) = agg.faces()
    assert f.dominant == UNCERTAIN and f.dominant_share == pytest.approx(1.0)


def test_aggregation_keeps_one_timeline_per_stream() -> None:
    agg = Aggregator(nominal_dt=0.1, max_gap_s=0.5, supported=np.ones(8, bool))
    # Two tracks at their own media times, interleaved as they arrive.
    for i in range(5):
        agg.add_frame(0.1 * i, [_sample(1, "happiness")], stream="a")
        agg.add_frame(100.0 + 0.2 * i, [_sample(2, "sadness")], stream="b")
    agg.finish()
    f1, f2 = agg.faces()
    assert f1.visible_s == pytest.approx(0.5) and f2.visible_s == pytest.approx(0.9)


def test_fixed_schedule_for_files() -> None:
    from stream.analysis.schedule import FixedSchedule

    s = FixedSchedule(detect_fps=10, emotion_fps=15)
    plans = [s.plan(i / 30, [1, 2]) for i in range(6)]
    assert [d for d, _ in plans] == [True, False, False, True, False, False]
    assert [e for _, e in plans] == [{1, 2}, set(), {1, 2}, set(), {1, 2}, set()]
    every = FixedSchedule(detect_fps=10, emotion_fps=15)
    assert all(every.plan(i / 10, [1]) == (True, {1}) for i in range(5))  # 10 fps: everything
    assert FixedSchedule(10, 15).plan(0.0, []) == (True, set())  # no faces known: detect
    assert FixedSchedule(0, 0).plan(0.5, [3]) == (True, None)  # 0: every frame, all faces


def test_timelines_stay_bounded_and_span_the_whole_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.analysis import aggregate

    monkeypatch.setattr(aggregate, "MAX_TIMELINE", 100)
    supported = np.ones(8, bool)
    agg = aggregate.Aggregator(0.1, 0.5, supported)
    probs = np.eye(8, dtype=np.float32)[1]
    for i in range(1000):
        s = FaceSample(1, "happiness", 0.9, probs, probs, np.zeros(2, np.float32), (0, 0, 1, 1))
        agg.add_frame(i * 0.1, [s])
    agg.finish()
    points = agg.timeline(1)
    assert len(points) <= 100
    assert points[0].t == 0.0 and points[-1].t > 99.0  # still the whole session
    assert abs(sum(p.dt for p in points) - agg.faces()[0].visible_s) < 1e-6
