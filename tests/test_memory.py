"""Long sessions in bounded memory: the timeline ladder, compact storage, unchanged aggregates."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stream.analysis import aggregate, report
from stream.analysis.actions import FaceActionStats
from stream.analysis.aggregate import Aggregator
from stream.analysis.fakes import FakeFace, FakeStages, fake_frames
from stream.analysis.ladder import DEFAULT_LADDER, FULL, Ladder, Series
from stream.analysis.speaker import ActiveSpeaker
from stream.analysis.stream import StreamAnalysis
from stream.analysis.voice_timeline import VoiceTimeline
from stream.core.config import Config, load_config
from stream.core.labels import LABELS
from stream.core.types import FaceSample, MediaInfo
from stream.vision.blendshapes import BLENDSHAPES
from stream.voice.prosody import FEATURES, ProsodyReport

ROOT = Path(__file__).resolve().parent.parent
STATES = ["happiness", "neutral", "sadness", "uncertain", "surprise"]


def _sample(i: int, number: int = 1) -> FaceSample:
    """A varying sample: labels change every 7 frames, probabilities and boxes move."""
    rng = np.random.default_rng(i % 97)
    p = rng.random(8).astype(np.float32)
    p /= p.sum()
    x = 0.1 + 0.001 * (i % 50)
    va = np.array([np.sin(i / 50), np.cos(i / 70)], np.float32)
    return FaceSample(number, STATES[(i // 7) % 5], float(p.max()), p, p[::-1].copy(), va,
                      (x, 0.2, x + 0.3, 0.6))  # fmt: skip


def _feed(agg: Aggregator, seconds: float, fps: float, faces: int = 1) -> None:
    """`seconds` of frames; face 2 is away for 30 s of every 5 minutes."""
    for i in range(round(seconds * fps)):
        t = i / fps
        present = [n for n in range(1, faces + 1) if n == 1 or t % 300 < 270]
        agg.add_frame(t, [_sample(i + 13 * n, n) for n in present])
    agg.finish()


def test_the_ladder_bounds_points_per_face_and_spans_the_whole_session() -> None:
    """4 h at 2 analysed fps with the default ladder: the last 2 min at full resolution, 1 s
    buckets to 1 h, 10 s before that; the timeline still starts at 0 and ends at the end."""
    hours, fps = 4.0, 2.0
    agg = Aggregator(1 / fps, 1.0, np.ones(8, bool))
    t0 = time.perf_counter()
    _feed(agg, hours * 3600, fps)
    add_us = (time.perf_counter() - t0) / (hours * 3600 * fps) * 1e6
    pts = agg.timeline(1)
    end = hours * 3600
    (recent_s, _), (coarse_s, _) = DEFAULT_LADDER.steps
    full = recent_s * fps
    bound = (full + fps) + (coarse_s - recent_s + 10) / 1.0 + (end - coarse_s) / 10.0 + 1
    face = agg.faces()[0]
    print(
        f"{hours:g} h at {fps:g} fps: {len(pts)} points (bound {bound:.0f}, unladdered"
        f" {end * fps:.0f}), {agg.timeline_bytes() / 1e3:.0f} KB, {add_us:.1f} us a frame"
    )
    assert len(pts) <= bound
    assert pts[0].t == 0.0 and pts[-1].t + pts[-1].dt == pytest.approx(end, abs=1e-6)
    assert sum(p.dt for p in pts) == pytest.approx(face.visible_s, abs=1e-6)
    recent = [p for p in pts if p.t >= end - recent_s + 10]
    assert len(recent) == pytest.approx((recent_s - 10) * fps, abs=2)  # full resolution
    hour = [p for p in pts if 3600 <= p.t < 2 * 3600]
    assert len(hour) == 360  # 10-second buckets
    mid = [p for p in pts if end - 3000 <= p.t < end - 600]
    assert len(mid) == 2400  # 1-second buckets


def test_compaction_leaves_aggregates_unchanged_and_keeps_weighted_means() -> None:
    """Shares, visible time, dominant and means come from running totals: a laddered
    aggregator gives exactly what a full-resolution one gives; its merged points keep the
    visible time and the time-weighted means of the values."""
    small = Ladder(((20.0, 1.0), (120.0, 10.0)), max_points=400)
    full = Aggregator(0.1, 0.5, np.ones(8, bool), ladder=FULL)
    laddered = Aggregator(0.1, 0.5, np.ones(8, bool), ladder=small)
    for agg in (full, laddered):
        _feed(agg, 900, 10, faces=2)
    assert laddered.faces() == full.faces()
    assert laddered.overall() == full.overall()
    for f in full.faces():
        a, b = full.timeline(f.number), laddered.timeline(f.number)
        assert len(a) == f.samples and len(b) <= 400 < len(a)
        assert b[0].t == a[0].t and b[-1].t + b[-1].dt == pytest.approx(a[-1].t + a[-1].dt)
        assert sum(p.dt for p in b) == pytest.approx(f.visible_s, abs=1e-6)

        def mean(points: list[aggregate.TimelinePoint]) -> np.ndarray:
            w = np.array([p.dt for p in points])
            v = np.array([p.sample.raw_probs for p in points], np.float64)
            return np.asarray((v * w[:, None]).sum(axis=0) / w.sum())

        expected = np.array([f.mean_probabilities[lab] for lab in LABELS], np.float64)
        assert np.allclose(mean(b), expected, atol=1e-5)
        assert np.allclose(mean(a), expected, atol=1e-5)
        print(f"face {f.number}: {len(a)} points -> {len(b)}; {f.headline()}")
    # rebuilt from the merged points (as identity consolidation renumbers): the same totals
    rebuilt = Aggregator(0.1, 0.5, np.ones(8, bool), ladder=small)
    for f in laddered.faces():
        for p in laddered.timeline(f.number):
            rebuilt.add_point(p.t, p.dt, p.sample, p.states)
    # ... and as stream/analysis/consolidate.py's renumber_aggregator records them again: each
    # point as a frame closed by an empty frame dt later (merged points carry their own totals)
    replayed = Aggregator(0.1, 0.5, np.ones(8, bool), ladder=small)
    for f in laddered.faces():
        for p in laddered.timeline(f.number):
            sample = dataclasses.replace(p.sample, number=f.number)
            replayed.add_frame(p.t, [sample], f"face {f.number}")
            replayed.add_frame(p.t + p.dt, [], f"face {f.number}")
    replayed.finish()
    for agg in (rebuilt, replayed):
        for x, y in zip(agg.faces(), full.faces(), strict=True):
            assert x.visible_s == pytest.approx(y.visible_s, abs=1e-6)
            assert x.dominant == y.dominant and x.samples == y.samples
            assert x.shares == pytest.approx(y.shares, abs=1e-5)
            assert x.mean_probabilities == pytest.approx(y.mean_probabilities, abs=1e-5)


def test_series_merges_buckets_by_time_with_the_prevailing_category() -> None:
    s = Series(2, 3, Ladder(((10.0, 2.0),), max_points=64))
    # t 0..2 and 2..4: two buckets of 2 s, then recent samples up to t 20
    for t0, dt0, v0, c0 in [(0.0, 0.5, (0, 4), 0), (0.5, 1.5, (2, 0), 1), (2.0, 1.0, (1, 1), 2),
                            (3.0, 1.0, (3, 3), 2)]:  # fmt: skip
        s.add(t0, dt0, v0, c0)
    for k in range(17):
        s.add(4.0 + k, 1.0, (9, 9), 0)
    s.compact()
    t, dt, cat, v = s.columns()
    assert t[:2].tolist() == [0.0, 2.0] and dt[:2].tolist() == [2.0, 2.0]
    assert cat[:2].tolist() == [1, 2]  # 1.5 s of category 1 beats 0.5 s of 0
    assert np.allclose(v[0], [1.5, 1.0]) and np.allclose(v[1], [2.0, 2.0])
    assert len(s) == 5 + 11  # before t 10 (now 20 - 10): 2 s buckets; from 10 on every sample
    assert s.resolution_at(1.0) == 2.0 and s.resolution_at(19.0) == 0.0


@pytest.mark.parametrize(
    "steps",
    [((60.0, 1.0), (30.0, 10.0)), ((60.0, 2.0), (120.0, 3.0)), ((60.0, 0.0),)],
)
def test_bad_ladders_are_refused(steps: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError, match="ladder"):
        Ladder(steps)
    with pytest.raises(ValueError, match="max_points"):
        Ladder(DEFAULT_LADDER.steps, max_points=3)


def test_action_timelines_are_laddered_and_still_answer_at() -> None:
    stats = FaceActionStats(ladder=Ladder(((30.0, 1.0),), max_points=1000))
    scores = np.zeros(len(BLENDSHAPES), np.float32)
    for i in range(1200):  # 120 s at 10 fps
        scores[:] = (i % 10) / 10
        stats.add(i / 10, scores, keep=True)
    points = stats.timeline
    assert len(points) == 89 + 310 and points[0][0] == 0.0 and points[-1][0] == 119.9
    old = stats.at(10.55)  # in a merged 1 s bucket: its mean
    assert old is not None and np.allclose(old, 0.45, atol=1e-6)
    assert stats.at(500.0) is None
    assert stats.count == 1200 and np.allclose(stats.mean(), 0.45)


def _report(i: int) -> tuple[ProsodyReport, ActiveSpeaker]:
    r = ProsodyReport(
        t=i * 0.25, window_s=2.0, speech_ratio=(i % 9) / 8, speaking=i % 3 != 0,
        f0_median_hz=180.0 + i % 40 if i % 3 else None, f0_range_st=3.3, f0_var_st=None,
        voicing=0.8, energy_dbfs=-21.7, rate_per_s=None if i % 2 else 3.1,
        pause_ratio=1 - (i % 9) / 8, pauses=i % 4, mean_pause_s=0.31,
        z={k: (0.1 * j if (i + j) % 2 else None) for j, k in enumerate(FEATURES)},
        vocal_arousal_heuristic=0.27 if i % 5 else None,
    )  # fmt: skip
    scores = {1: 0.42, 3: -0.1} if i % 2 else {}
    return r, ActiveSpeaker(i * 0.25, (i % 3) or None, 0.61, i % 3 != 0, scores)


def test_voice_timeline_is_a_compact_list_of_the_same_reports() -> None:
    items = [_report(i) for i in range(3000)]
    tracemalloc.start()
    a = tracemalloc.get_traced_memory()[0]
    vt = VoiceTimeline(items)
    kept = tracemalloc.get_traced_memory()[0] - a
    tracemalloc.stop()
    per = kept / len(items)
    print(f"voice timeline: {per:.0f} bytes a report ({vt.nbytes() / len(items):.0f} in blocks)")
    assert per < 300
    assert len(vt) == 3000 and bool(vt)
    assert list(vt) == items
    assert vt[0] == items[0] and vt[-1] == items[-1] and vt[1500] == items[1500]
    assert vt[100:105] == items[100:105]
    assert np.array_equal(vt.times(), [r.t for r, _ in items])
    vt.clear()
    assert len(vt) == 0 and list(vt) == [] and not vt


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "configs" / "default.toml", env={})


def test_report_writers_take_laddered_timelines(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session whose older minute is merged into buckets still gives JSON, CSV and HTML
    spanning the whole session, with the summaries of every analysed frame."""
    monkeypatch.setattr(aggregate, "DEFAULT_LADDER", Ladder(((10.0, 1.0), (30.0, 5.0)), 10_000))
    cfg = cfg.replace("audio", enabled=False)
    analysis = StreamAnalysis(FakeStages(cfg, voice=False), 5.0)

    def faces(i: int) -> list[FakeFace]:
        return [
            FakeFace(0, (30, 40, 110, 140), mouth=(i % 4) / 3),
            FakeFace(2, (180, 50, 260, 150)),
        ]

    frames = fake_frames(300, faces, fps=5.0)  # 60 s
    for frame in frames:
        analysis.push_video(frame)
    analysis.finish()
    info = MediaInfo(Path("soak"), "live", 320, 240, 60.0, 5.0, "test", False)
    a = analysis.result(info, 1.0)
    doc = json.loads(report.FORMATS["json"][0](a))
    rows = list(csv.DictReader(io.StringIO(report.FORMATS["csv"][0](a))))
    html = report.FORMATS["html"][0](a)
    per_face = {f.number: len(a.timelines[f.number]) for f in a.faces}
    times = [float(r["time_s"]) for r in rows if r["face_id"]]
    print(
        f"points per face {per_face} of {[f.samples for f in a.faces]} frames; CSV rows {len(rows)}"
    )
    assert all(n < f.samples / 2 for n, f in zip(per_face.values(), a.faces, strict=True))
    assert min(times) < 1.0 and max(times) > 59.0
    assert [f["analysed_frames"] for f in doc["faces"]] == [f.samples for f in a.faces]
    assert all(f["visible_s"] == pytest.approx(f["last_seen_s"] - f["first_seen_s"] + 0.2, abs=0.3)
               for f in doc["faces"])  # fmt: skip
    assert "<svg" in html and len(html) > 1000
    # merged rows find their bucket's facial actions (a face's first frame has none yet)
    rows = [r for r in rows if float(r["time_s"]) >= 1.0]
    with_aus = [any(v for k, v in r.items() if k.startswith("au_")) for r in rows]
    missing = [(r["time_s"], r["face_id"]) for r, ok in zip(rows, with_aus, strict=True) if not ok]
    assert all(with_aus), f"rows without facial actions: {missing}"
