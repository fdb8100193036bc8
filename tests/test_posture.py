"""Upper-body posture (BlazePose) with its visibility gates, gaze/attention/blinks, and the
per-face behaviour summaries."""

from __future__ import annotations

import numpy as np
import pytest

from stream.analysis.behaviour import BehaviourSummary
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.models.runtime import SessionFactory
from stream.vision.detect import YuNetDetector
from stream.vision.gaze import EYES, BlinkCounter, GazeTracker, eye_state
from stream.vision.gestures import HeadGesture
from stream.vision.headpose import HeadPose
from stream.vision.posture import (
    HAND,
    SH_L,
    SH_R,
    PoseLandmarks,
    PoseModel,
    PostureSample,
    PostureTracker,
    _Person,
)

from .compose_heads import frames, largest
from .conftest import MEDIA, VIDEO, imread

BOX = np.array([100, 50, 200, 170], np.float32)  # a face 120 px high


class _NoSession:
    def get_inputs(self) -> list[object]:
        class _I:
            name = "input_1"

        return [_I()]


def _person() -> _Person:
    from collections import deque

    return _Person(deque(maxlen=50), deque(maxlen=50), deque(maxlen=8))


def _lm(presence: float = 0.99, shoulders: bool = True, hand: bool = False) -> PoseLandmarks:
    pts = np.zeros((33, 2), np.float32)
    vis = np.zeros(33, np.float32)
    pts[0] = (150, 120)  # nose
    pts[7], pts[8] = (120, 110), (180, 110)  # ears
    vis[[0, 7, 8]] = 0.99
    pts[SH_L], pts[SH_R] = (240, 260), (60, 260)
    vis[[SH_L, SH_R]] = 0.95 if shoulders else 0.1
    if hand:
        pts[list(HAND)] = (150, 160)  # at the mouth
        vis[list(HAND)] = 0.9
    return PoseLandmarks(pts, vis, presence, 1.0)


def test_posture_cues_are_gated_by_visibility() -> None:
    tr = PostureTracker(PoseModel(_NoSession()))
    p = _person()
    s = tr.cues(p, 0.0, _lm(presence=0.1), BOX)
    assert not s.visible and s.shoulders_raised is None and s.hand_to_face is None
    s = tr.cues(p, 0.1, _lm(shoulders=False), BOX)
    assert s.visible and s.shoulders_raised is None  # not visible, not "no"
    assert s.hand_to_face is None and s.activity is None  # no hand seen
    for i in range(6):
        s = tr.cues(p, 0.2 + i / 10, _lm(), BOX)
    assert s.shoulders_raised is False and s.lean is not None and abs(s.lean) < 1e-6
    raised = _lm()
    raised.points[[SH_L, SH_R], 1] -= 40  # shoulders up toward the ears
    assert tr.cues(p, 1.0, raised, BOX).shoulders_raised is True
    assert tr.cues(p, 1.1, _lm(hand=True), BOX).hand_to_face is True
    nearer = BOX + np.array([-30, -30, 30, 30], np.float32)
    s = tr.cues(p, 1.2, _lm(), nearer)
    assert s.lean is not None and s.lean > 0.1 and s.lean_word == "leaning in"


def test_gaze_adds_the_eyes_to_the_head_and_attention_follows_the_cone() -> None:
    g = GazeTracker(cone_yaw_deg=20, cone_pitch_deg=15, cone_pitch_centre_deg=0, drop_min_s=1.0)
    assert g.attention(0, 0) == 1.0 and g.attention(40, 0) == 0.0
    assert 0 < g.attention(25, 0) < 1
    lm = np.zeros((478, 3), np.float32)
    for outer, inner, up, low, iris in EYES:
        cx = 100.0 if outer == 33 else 200.0
        lm[outer, :2] = (cx - 15 if outer == 33 else cx + 15, 100)
        lm[inner, :2] = (cx + 15 if outer == 33 else cx - 15, 100)
        lm[up, :2], lm[low, :2] = (cx, 95), (cx, 105)
        lm[iris, :2] = (cx + 6, 100)  # both irises toward the image's right
    e = eye_state(lm)
    assert e.yaw > 10 and abs(e.pitch) < 1 and 0.3 < e.openness < 0.4
    s, eye, _ = g.update(1, 0.0, HeadPose(5, 0, 0, "smoothed"), lm)
    assert eye is not None and s.eyes and abs(s.x - (5 + e.yaw)) < 1e-6
    s, _, _ = g.update(1, 2.0, HeadPose(5, 0, 0, "smoothed"))  # eyes too old: head only
    assert not s.eyes and s.x == 5


def test_attention_drops_need_the_configured_time() -> None:
    g = GazeTracker(drop_min_s=2.0)
    away, toward = HeadPose(60, 0, 0, "smoothed"), HeadPose(0, 0, 0, "smoothed")
    drops = []
    for i in range(100):
        t = i / 10
        head = away if 1 <= t < 2.5 or 4 <= t < 7 else toward
        drops += g.update(1, t, head)[2]
    assert [(round(d.start, 1), round(d.end, 1)) for d in drops] == [(4.0, 7.0)]
    assert drops[0].to_json()["behaviour"] == "looking away"
    g.update(2, 0.0, away)
    g.update(2, 3.0, away)
    assert [d.face for d in g.flush()] == [2]
    with pytest.raises(ValueError):
        GazeTracker(cone_yaw_deg=0)


def test_blink_rate_counts_events_when_dense_and_estimates_when_sparse() -> None:
    dense = BlinkCounter(min_s=10)
    for i in range(30 * 30):  # 30 s at 30 Hz, a 0.2 s blink every 4 s
        t = i / 30
        dense.add(t, 0.05 if (t % 4) < 0.2 else 0.3)
    assert dense.method == "events" and abs((dense.rate_per_min() or 0) - 15) < 1.5
    sparse = BlinkCounter(min_s=10)
    for i in range(2 * 300):  # 300 s at 2 Hz of the same eyes
        t = i / 2 + 0.013 * i
        sparse.add(t, 0.05 if (t % 4) < 0.2 else 0.3)
    rate = sparse.rate_per_min()
    print(f"blink rate, dense events: {dense.rate_per_min():.1f}/min; sparse estimate: {rate}")
    assert sparse.method == "occupancy" and rate is not None and 5 < rate < 30
    assert BlinkCounter().rate_per_min() is None


def test_behaviour_summary_shares_and_counts() -> None:
    b = BehaviourSummary(max_gap_s=0.5)
    f = b.face(3)
    g = GazeTracker()
    for i in range(101):
        t = i / 10
        head = HeadPose(50 if t >= 7 else 0, 0, 0, "smoothed")
        gaze, _, drops = g.update(3, t, head)
        lean = 0.2 if t < 5 else 0.0
        f.add_frame(t, head, gaze, PostureSample(True, lean, None, False, 0.5))
        for d in drops:
            f.add_drop(d)
    for d in g.flush():
        f.add_drop(d)
    f.add_gesture(HeadGesture(3, "nod", 1.0, 1.5, 2, 6.0))
    s = b.summary()["3"]
    print(s)
    assert s["attention_share"] == pytest.approx(0.7, abs=0.02)
    assert s["looking_away_drops"] == 1 and s["nods"] == 1 and s["shakes"] == 0
    assert s["leaning_in_share"] == pytest.approx(0.5, abs=0.02)
    assert s["shoulders_raised_share"] is None  # never visible: no share, not 0
    assert s["hand_to_face_share"] == 0.0 and s["gesture_activity"] == 0.5
    assert b.attention_now({}) is None


@pytest.mark.integration
def test_pose_on_real_frames_and_a_face_only_crop(config: Config, factory: SessionFactory) -> None:
    spec = factory.store.manifest[config.models.detector]
    det = YuNetDetector(factory.get(spec.name), spec, config.detection)
    for name in ("pose_landmark_lite", "pose_landmark_full"):
        tracker = PostureTracker(PoseModel(factory.get(name)))
        # the Pexels clip: shoulders at the frame's bottom, a hand over the mouth at 7 s
        seen = {}
        for _, t, im in frames(VIDEO / "pyfeat_WolfgangLanger_Pexels.mp4", fps=2.0):
            if t > 8.0:
                break
            d = det(VideoFrame(im, t))
            s = tracker.update(1, t, im, d.boxes[largest(d)])
            seen[round(t, 1)] = s
        print(name, {t: (s.shoulders_raised, s.hand_to_face) for t, s in seen.items()})
        assert sum(s.visible for s in seen.values()) >= 0.85 * len(seen)
        assert seen[7.0].hand_to_face is True
        # head-and-shoulders framing (fer_woman2): the shoulders are seen
        tracker.reset()
        shoulders = []
        for _, t, im in frames(VIDEO / "fer_woman2.mp4", fps=2.0):
            d = det(VideoFrame(im, t))
            shoulders.append(tracker.update(2, t, im, d.boxes[largest(d)]).shoulders_raised)
        seen_share = sum(s is not None for s in shoulders) / len(shoulders)
        raised_share = sum(s is True for s in shoulders) / len(shoulders)
        print(
            f"{name}: shoulders judged on {seen_share:.0%} of fer_woman2, raised {raised_share:.0%}"
        )
        if name == "pose_landmark_full":  # lite puts these shoulders at the chin: gated off
            assert seen_share >= 0.7 and raised_share <= 0.2
        # a face-only picture (JAFFE, the face fills it): nothing below the face is visible
        face_only = imread(
            MEDIA
            / "expressions"
            / "jaffe"
            / sorted(p.name for p in (MEDIA / "expressions" / "jaffe").iterdir())[0]
        )
        d = det(VideoFrame(face_only, 0.0))
        tracker.reset()
        s = tracker.update(9, 0.0, face_only, d.boxes[largest(d)])
        print(name, "face-only:", s.to_json())
        assert s.shoulders_raised is None and s.activity is None and s.hand_to_face is None


@pytest.mark.integration
def test_behaviour_signals_and_summary_on_a_real_clip(
    config: Config, factory: SessionFactory
) -> None:
    """The per-stream object the pipeline calls, on 6 s of a real clip at 10 fps with facial
    actions every 0.5 s, and the JSON summary built from it."""
    from stream.vision.blendshapes import FaceActionModel
    from stream.vision.signals import BehaviourSignals, FaceInput, event_json

    spec = factory.store.manifest[config.models.detector]
    det = YuNetDetector(factory.get(spec.name), spec, config.detection)
    act = FaceActionModel(
        factory.get(config.actions.landmarks_model), factory.get(config.actions.blendshapes_model)
    )
    config = config.replace("behaviour", posture_fps=1.0, posture_max_per_s=2.0)
    signals = BehaviourSignals.from_config(config, factory)
    assert signals.posture is not None  # on for files by default
    assert BehaviourSignals.from_config(config, factory, live=True).posture is None
    summary = BehaviourSummary()
    next_lm, prior, postures, sources = 0.0, None, 0, set()
    for _, t, im in frames(VIDEO / "fer_woman2.mp4", fps=10.0):
        if t > 6.0:
            break
        d = det(VideoFrame(im, t))
        k = largest(d)
        lms = None
        if t >= next_lm:
            fa = act(im, d.boxes[k], d.landmarks[k][:2], prior, bgr=True)
            prior, lms, next_lm = (d.boxes[k], fa.landmarks), fa.landmarks, t + 0.5
        fs = signals.update(t, im, [FaceInput(1, d.boxes[k], d.landmarks[k], lms)])
        summary.add(t, fs)
        one = fs.faces[1]
        js = one.to_json()
        assert {"head", "gaze", "attention", "looking_away"} <= set(js)
        postures += one.posture is not None
        sources.add(one.raw_pose.source)
        for e in fs.gestures + fs.drops:
            assert event_json(e)["type"] in ("gesture", "attention_drop")
    summary.add_events(signals.flush())
    s = summary.summary()["1"]
    print("fer_woman2, 6 s:", s, "pose sources", sorted(sources), "posture calls", postures)
    assert sources == {"landmarks", "flow"}
    assert 5 <= postures <= 7  # once per second
    share = s["attention_share"]
    assert isinstance(share, float) and share > 0.5
    assert s["posture_visible_share"] is not None


def test_behaviour_rows_and_identity_joins() -> None:
    b = BehaviourSummary()
    g = GazeTracker()
    for n, (t0, yaw) in {1: (0.0, 0.0), 2: (10.0, 50.0)}.items():
        for i in range(21):
            t = t0 + i / 10
            head = HeadPose(yaw, -3.0, 1.0, "smoothed")
            b.face(n).add_frame(t, head, g.update(n, t, head)[0])
        b.face(n).add_gesture(HeadGesture(n, "nod", t0 + 1, t0 + 1.5, 2, 5.0))
    row = b.face(1).row_at(1.05)
    assert row is not None and row["head_pitch"] == -3.0 and row["attention"] == 1.0
    assert b.face(1).row_at(-1) is None
    b.join({2: 1})
    assert list(b.faces) == [1]
    s = b.summary()["1"]
    assert s["nods"] == 2 and s["attention_share"] == pytest.approx(0.5, abs=0.03)
    assert b.face(1).row_at(10.5) is not None


def test_posture_calls_are_spread_over_faces_within_the_stream_cap() -> None:
    from stream.core.config import BehaviourConfig
    from stream.vision.signals import BehaviourSignals

    cfg = BehaviourConfig(posture_fps=1.0, posture_max_per_s=2.0)
    sig = BehaviourSignals(cfg, None, None, None, PostureTracker(PoseModel(_NoSession())))  # type: ignore[arg-type]
    calls: dict[int, list[float]] = {}
    for i in range(100):  # 10 s at 10 fps, 9 faces
        t = i / 10
        for n in sig._posture_due(t, list(range(1, 10))):
            calls.setdefault(n, []).append(t)
    total = sum(len(v) for v in calls.values())
    assert 19 <= total <= 21 and set(calls) == set(range(1, 10))  # 2 per second, all faces
    one = {n for i in range(30) for n in sig._posture_due(10 + i / 10, [1])}
    assert one == {1}


@pytest.mark.integration
def test_eyes_agree_with_mediapipe_blendshapes(config: Config, factory: SessionFactory) -> None:
    """Our eye turn and openness (from landmarks) against MediaPipe's eyeLook/eyeBlink scores
    of the same landmark pass, on two clips with clear faces at 5 fps."""
    from stream.vision.blendshapes import INDEX, FaceActionModel

    spec = factory.store.manifest[config.models.detector]
    det = YuNetDetector(factory.get(spec.name), spec, config.detection)
    act = FaceActionModel(
        factory.get(config.actions.landmarks_model), factory.get(config.actions.blendshapes_model)
    )

    def bs(b: np.ndarray, *names: str) -> float:
        return float(np.mean([b[INDEX[n]] for n in names]))

    pooled = []
    for name in ("fer_woman2.mp4", "pyfeat_WolfgangLanger_Pexels.mp4"):
        rows = []
        prior = None
        for _, t, im in frames(VIDEO / name, fps=5.0):
            d = det(VideoFrame(im, t))
            k = largest(d)
            fa = act(im, d.boxes[k], d.landmarks[k][:2], prior, bgr=True)
            prior = (d.boxes[k], fa.landmarks)
            e, b = eye_state(fa.landmarks), fa.scores
            right = bs(b, "eyeLookOutLeft", "eyeLookInRight") - bs(
                b, "eyeLookInLeft", "eyeLookOutRight"
            )  # toward the image's right
            up = bs(b, "eyeLookUpLeft", "eyeLookUpRight") - bs(
                b, "eyeLookDownLeft", "eyeLookDownRight"
            )
            rows.append(
                (e.yaw, e.pitch, e.openness, right, up, bs(b, "eyeBlinkLeft", "eyeBlinkRight"))
            )
        r = np.array(rows)
        ry = np.corrcoef(r[:, 0], r[:, 3])[0, 1]
        rp = np.corrcoef(r[:, 1], r[:, 4])[0, 1]
        ro = np.corrcoef(r[:, 2], r[:, 5])[0, 1]
        print(f"{name}: eye yaw r={ry:.2f}, eye pitch r={rp:.2f}, openness vs eyeBlink r={ro:.2f}")
        assert ry >= 0.8 and ro <= -0.8
        pooled.append(r)
    p = np.concatenate(pooled)
    rp = np.corrcoef(p[:, 1], p[:, 4])[0, 1]
    print(f"pooled eye pitch r={rp:.2f}")
    assert rp >= 0.6


def test_signals_forget_faces_gone_for_long() -> None:
    from stream.core.config import BehaviourConfig
    from stream.vision.gestures import GestureDetector
    from stream.vision.headpose import CanonicalFace, LandmarkPose, PointPose
    from stream.vision.headpose import HeadPoseTracker as Head
    from stream.vision.signals import PRUNE_S, BehaviourSignals, FaceInput

    from .compose_heads import TASK

    face = CanonicalFace.from_task(TASK)
    sig = BehaviourSignals(
        BehaviourConfig(),
        Head(PointPose(face), LandmarkPose(face)),
        GazeTracker(),
        GestureDetector(),
    )
    img = np.zeros((240, 320, 3), np.uint8)
    # five points of a face turned far to the side (looking away), then gone
    pts = np.array([[150, 100], [170, 100], [185, 120], [152, 140], [168, 140]], np.float32)
    box = np.array([130, 70, 200, 160], np.float32)
    for i in range(50):
        sig.update(i / 10, img, [FaceInput(4, box, pts)])
    assert sig.head.raw(4) is not None
    out = sig.update(5.0 + PRUNE_S + 1, img, [])
    assert sig.head.raw(4) is None and 4 not in sig._seen
    assert [(d.face, d.start) for d in out.drops] == [(4, 0.0)]  # its open drop ends
