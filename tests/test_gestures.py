"""Nods and shakes: the detector on scripted pose series, then the whole path (detector, landmark
passes every 0.5 s, optical flow between, 10 analysed fps) on real photos turned in 3D with
known nods and shakes, still controls, and real talking clips."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.config import Config
from stream.core.types import F32, VideoFrame
from stream.models.runtime import SessionFactory
from stream.vision.blendshapes import FaceActionModel
from stream.vision.detect import YuNetDetector
from stream.vision.gestures import GestureDetector, HeadGesture
from stream.vision.headpose import CanonicalFace, HeadPoseTracker

from .compose_heads import TASK, Gesture, HeadRenderer, frames, largest, photo_faces, script
from .conftest import VIDEO


class ProductPath:
    """Frames -> detector -> landmarks every 0.5 s -> head pose (flow between) -> nods/shakes:
    the path a file's faces take, for one face (the largest)."""

    def __init__(self, config: Config, factory: SessionFactory) -> None:
        spec = factory.store.manifest[config.models.detector]
        self.det = YuNetDetector(factory.get(spec.name), spec, config.detection)
        a = config.actions
        self.act = FaceActionModel(factory.get(a.landmarks_model), factory.get(a.blendshapes_model))
        self.behaviour = config.behaviour

    def start(self) -> None:
        """A new clip: fresh pose tracker and gesture detector."""
        b = self.behaviour
        self.tracker = HeadPoseTracker.from_task(TASK, b.pose_tau_s)
        self.gestures = GestureDetector(b.nod_min_deg, b.shake_min_deg, b.max_swing_s)
        self.next_lm = 0.0
        self.prior: tuple[F32, F32] | None = None
        self.found: list[HeadGesture] = []

    def step(self, im: np.ndarray, t: float) -> bool:
        """Analyse one BGR frame at media time t; False when no face was found."""
        d = self.det(VideoFrame(im, t))
        if len(d) == 0:
            return False
        k = largest(d)
        lms = None
        if t >= self.next_lm:
            fa = self.act(im, d.boxes[k], d.landmarks[k][:2], self.prior, bgr=True)
            self.prior, lms, self.next_lm = (d.boxes[k], fa.landmarks), fa.landmarks, t + 0.5
        self.tracker.update(1, t, d.landmarks[k], im.shape[1], im.shape[0], lms, im)
        raw = self.tracker.raw(1)
        assert raw is not None
        self.found += self.gestures.update(1, t, raw.yaw, raw.pitch)
        return True

    def finish(self) -> list[HeadGesture]:
        """Every gesture of the clip (open ones closed)."""
        return self.found + self.gestures.flush()


def score(found: list[HeadGesture], truth: list[Gesture]) -> tuple[int, int]:
    """(true gestures found, false alarms): same kind, overlapping within 0.3 s."""
    hit: set[int] = set()
    false = 0
    for e in found:
        m = [
            k
            for k, g in enumerate(truth)
            if g.kind == e.kind and e.start < g.end + 0.3 and e.end > g.start - 0.3
        ]
        hit.update(m)
        false += not m
    return len(hit), false


def run(det: GestureDetector, ypr: np.ndarray, fps: float = 10.0) -> list[HeadGesture]:
    out: list[HeadGesture] = []
    for i, (y, p, _) in enumerate(ypr):
        out += det.update(1, i / fps, float(y), float(p))
    return out + det.flush()


def test_scripted_nods_and_shakes_are_found_and_looks_are_not() -> None:
    hits = total = false = 0
    minutes = 0.0
    for seed in range(20):
        ypr, truth = script(seed, 60.0)
        h, f = score(run(GestureDetector(), ypr), truth)
        hits, total, false, minutes = hits + h, total + len(truth), false + f, minutes + 1
    print(f"scripted: recall {hits}/{total} = {hits / total:.2f}, false {false / minutes:.2f}/min")
    assert hits / total >= 0.95 and false / minutes <= 0.2


def test_still_slow_and_single_movements_are_not_gestures() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(600) / 10
    still = np.stack([rng.normal(0, 0.5, 600), rng.normal(0, 0.5, 600), np.zeros(600)], 1)
    assert run(GestureDetector(), still) == []
    slow = still.copy()
    slow[:, 1] += 15 * np.sin(2 * np.pi * 0.3 * t)  # looking down and up every 3 s
    slow[:, 0] += 20 * np.sin(2 * np.pi * 0.2 * t)
    assert run(GestureDetector(), slow) == []
    glance = still.copy()
    glance[100:105, 0] += [8, 16, 16, 8, 0]  # one quick glance aside and back: 2 swings
    assert run(GestureDetector(), glance) == []


def test_a_nod_is_reported_after_it_ends_with_its_strength() -> None:
    det = GestureDetector()
    t = np.arange(40) / 10
    pitch = np.where((t >= 1) & (t < 1.8), -6 * np.sin(2 * np.pi * 1.25 * (t - 1)), 0.0)
    events = []
    for ti, p in zip(t, pitch, strict=True):
        ev = det.update(7, float(ti), 0.0, float(p))
        if ev:
            events.append((float(ti), ev))
    assert len(events) == 1
    when, (g,) = events[0]
    assert g.kind == "nod" and g.face == 7 and g.swings >= 2
    assert 0.9 <= g.start <= 1.1 and 1.5 <= g.end <= 1.9 and when <= g.end + 1.0
    assert 6 <= g.strength <= 13
    assert g.to_json()["gesture"] == "nod"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        GestureDetector(nod_min_deg=0)
    with pytest.raises(ValueError):
        GestureDetector(max_swing_s=5)


@pytest.mark.integration
def test_turned_photos_and_still_controls(config: Config, factory: SessionFactory) -> None:
    """Real photos turned in 3D (known nods and shakes) through the product path."""
    path = ProductPath(config, factory)
    face = CanonicalFace.from_task(TASK)
    photos = photo_faces(path.det, path.act)[:3]
    hits = total = false = 0
    still_false = 0
    minutes = still_minutes = 0.0
    rng = np.random.default_rng(0)
    for n, (img, lm) in enumerate(photos):
        renderer = HeadRenderer(img, lm, face)
        ypr, truth = script(100 + n, 30.0)
        still = np.zeros((150, 3))
        for part, (motion, known) in enumerate(((ypr, truth), (still, []))):
            path.start()
            for i, (y, p, r) in enumerate(motion):
                im = renderer.render(float(y), float(p), float(r))
                if part == 1:  # camera noise on the still control
                    noise = rng.normal(0, 3, im.shape)
                    im = np.clip(im + noise, 0, 255).astype(np.uint8)
                path.step(im, i / 10)
            found = path.finish()
            h, f = score(found, known)
            if part == 0:
                hits, total, false, minutes = hits + h, total + len(known), false + f, minutes + 0.5
                print(f"photo {n}: {h}/{len(known)} gestures found, {f} false alarms")
            else:
                still_false += f
                still_minutes += len(still) / 600
    print(
        f"turned photos: recall {hits}/{total} = {hits / total:.2f}, "
        f"false alarms {false / minutes:.2f}/min; "
        f"still controls {still_false / still_minutes:.2f}/min"
    )
    assert hits / total >= 0.5
    assert false / minutes <= 2.0 and still_false == 0


@pytest.mark.integration
def test_events_per_minute_on_real_talking_clips(config: Config, factory: SessionFactory) -> None:
    """No ground truth here (people talking do nod): printed for the record, bounded loosely."""
    path = ProductPath(config, factory)
    for name in ("fer_woman2.mp4", "pyfeat_WolfgangLanger_Pexels.mp4"):
        path.start()
        last_t = 0.0
        for _, t, im in frames(VIDEO / name, fps=10.0):
            if path.step(im, t):
                last_t = t
        found = path.finish()
        rate = len(found) / (last_t / 60)
        kinds = [f"{g.kind}@{g.start:.1f}s({g.strength:.1f})" for g in found]
        print(f"{name}: {len(found)} gestures in {last_t:.1f} s ({rate:.1f}/min): {kinds}")
        assert rate <= 20
