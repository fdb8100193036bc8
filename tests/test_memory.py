"""Long sessions in bounded memory: the timeline ladder, compact storage, unchanged aggregates."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import subprocess
import sys
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


# --------------------------------------------------------------------------- peak RSS of analyze

#: Bound on the peak anonymous memory (heap, model buffers, frames: RssAnon) of a fresh
#: `analyze GALLERY --fps 30 --no-voice` process on bench_mediapipe's 9-face 960x540 gallery
#: (8 s, every frame): 126 MiB measured since helper threads are process-wide, the posture
#: model skips layout copies, small frames decode without frame threads and YuNet's input is
#: built in its own layout (137-150 before; 190-241 before the models shared one ONNX Runtime
#: arena and dropped their serialized bytes, stream/models/runtime.py). Total RSS (197 MiB;
#: README, "Where the memory goes") also counts the shared
#: libraries' pages the kernel maps around each fault, which depend on the page cache: the
#: same libraries took 71 MiB in one venv and 119 MiB in a freshly installed one (OpenCV 13 vs
#: 38 MiB), so the bound is on what this program allocates.
ANALYZE_PEAK_ANON_MIB = 150.0


def _peak_anon_mib(cmd: list[str]) -> tuple[float, float, int]:
    """Run `cmd`, sampling its /proc status every 10 ms: (peak RssAnon MiB, VmHWM MiB, exit)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    anon = hwm = 0.0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "VmHWM:")):
                        kib = int(line.split()[1]) / 1024
                        if line.startswith("RssAnon:"):
                            anon = max(anon, kib)
                        else:
                            hwm = max(hwm, kib)
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass  # it just ended
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.01)
    return anon, hwm, proc.returncode


class _FakeSession:
    """One batch-first float input; two batch-first outputs that depend on each row alone."""

    def __init__(self, row: tuple[int, ...] = (4, 4, 3)) -> None:
        self.row = row
        self.calls: list[int] = []

    def get_inputs(self) -> list[object]:
        return [_Arg("x", ["N", *self.row], "tensor(float)")]

    def get_outputs(self) -> list[object]:
        return [_Arg("sum", ["N", 1]), _Arg("first", ["N"])]

    def run(
        self, names: object, feeds: dict[str, np.ndarray], opts: object = None
    ) -> list[np.ndarray]:
        x = feeds["x"]
        self.calls.append(len(x))
        return [x.reshape(len(x), -1).sum(axis=1, keepdims=True), x.reshape(len(x), -1)[:, 0]]


@dataclasses.dataclass
class _Arg:
    name: str
    shape: list[object]
    type: str = "tensor(float)"


def test_chunked_session_splits_big_batches_and_joins_outputs_in_order() -> None:
    from stream.models.runtime import ChunkedSession

    inner = _FakeSession()
    row_bytes = 4 * 4 * 4 * 3
    s = ChunkedSession.wrap(inner, 3 * row_bytes + 1)
    assert isinstance(s, ChunkedSession) and s.rows == 3
    x = np.random.default_rng(0).random((8, 4, 4, 3)).astype(np.float32)
    whole = inner.run(None, {"x": x})
    inner.calls.clear()
    got = s.run(None, {"x": x})
    assert inner.calls == [3, 3, 2]
    assert all(np.array_equal(a, b) for a, b in zip(got, whole, strict=True))
    inner.calls.clear()
    s.run(None, {"x": x[:2]})
    assert inner.calls == [2]  # small batches go through in one call
    assert s.get_inputs()[0].name == "x"  # the rest of the session's API passes through


def test_chunked_session_leaves_other_models_alone() -> None:
    from stream.models.runtime import ChunkedSession

    fixed = _FakeSession()
    fixed.get_outputs = lambda: [_Arg("y", [1, 7])]  # type: ignore[method-assign]
    assert ChunkedSession.wrap(fixed, 1 << 20) is fixed
    ints = _FakeSession()
    ints.get_inputs = lambda: [_Arg("x", ["N", 4], "tensor(int64)")]  # type: ignore[method-assign]
    assert ChunkedSession.wrap(ints, 1 << 20) is ints
    with pytest.raises(ValueError, match="rows"):
        ChunkedSession(_FakeSession(), 0)


def test_heap_trim_runs_once_per_interval() -> None:
    from stream.offline.analyze import HeapTrim

    now = [0.0]
    trims: list[float] = []

    def trim() -> bool:
        trims.append(now[0])
        return True

    h = HeapTrim(1.0, clock=lambda: now[0], trim=trim)
    for k in range(1, 26):
        now[0] = k * 0.1
        h.tick()
    assert trims == pytest.approx([1.0, 2.0]) and h.trims == 2
    with pytest.raises(ValueError, match="every_s"):
        HeapTrim(0.0)


def test_analyze_imports_no_network_or_tls_modules() -> None:
    """`analyze` never downloads: urllib.request, ssl and OpenSSL's hashlib (~7 MB resident)
    load only when a model is fetched or hashed."""
    code = (
        "import sys\n"
        "import stream.cli, stream.offline.analyze, stream.analysis.report\n"
        "import stream.analysis.stages\n"
        "print(sorted(m for m in ('ssl', 'urllib.request', 'http.client', 'hashlib', '_hashlib')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"network/TLS modules after the analyze imports: {out.stdout.strip()}")
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_chunked_models_give_the_outputs_of_one_call(config: Config) -> None:
    """The real embedder and expression models: 9 faces in chunks == 9 faces in one call."""
    from stream.models.runtime import ChunkedSession, make_factory

    factory = make_factory(config)
    rng = np.random.default_rng(3)
    for name in ("mobilefacenet_sirius_192d", "faceapi_expression_7c", "fer_minixception_7c"):
        s = factory.get(name)
        inner = s.session if isinstance(s, ChunkedSession) else s
        inp = inner.get_inputs()[0]
        x = (rng.random([9, *inp.shape[1:]]) * 255).astype(np.float32)
        one = inner.run(None, {inp.name: x})
        chunked = ChunkedSession(inner, 2).run(None, {inp.name: x})
        rows = s.rows if isinstance(s, ChunkedSession) else None
        print(f"{name}: {rows} faces a call in analyze; chunks of 2 bitwise equal to one call")
        assert all(np.array_equal(a, b) for a, b in zip(one, chunked, strict=True))


@pytest.mark.integration
def test_analyze_peak_rss_on_the_9_face_gallery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh `emotion-stream analyze` process over bench_mediapipe's 9-face gallery, every
    frame, voice off: its peak anonymous memory stays under the bound."""
    from bench.bench_mediapipe import build_gallery
    from bench.bench_vision import cli_command

    from .conftest import MODELS

    gallery = tmp_path / "gallery9_960x540.mp4"
    build_gallery(gallery)
    monkeypatch.setenv("EMOTION_STREAM_MODELS", str(MODELS))
    out = tmp_path / "gallery.json"
    cmd = [*cli_command(), "analyze", str(gallery), "--fps", "30", "--no-voice",
           "--no-progress", "--json", str(out)]  # fmt: skip
    anon, hwm, code = _peak_anon_mib(cmd)
    doc = json.loads(out.read_text())
    print(
        f"analyze 9-face gallery, 30 fps, no voice: peak anonymous memory {anon:.1f} MiB (bound"
        f" {ANALYZE_PEAK_ANON_MIB:.0f}), peak RSS {hwm:.1f} MiB, {len(doc['faces'])} faces, "
        f"{doc['analysis']['analysed_frames']} frames"
    )
    assert code == 0
    assert doc["analysis"]["analysed_frames"] == 240 and len(doc["faces"]) >= 9
    assert 0 < anon <= ANALYZE_PEAK_ANON_MIB


#: Most the anonymous memory may grow from the 2nd to the 5th `stream.analyze` of one clip in
#: one process. Each analysis started its own helper threads, and each ended thread left
#: ~12 MiB of native state resident: +38 MiB over those three calls before the threads became
#: process-wide (stream/core/helpers.py), -0.3 to +5.1 MiB after.
REPEAT_GROWTH_MIB = 10.0

_REPEAT = """
import sys, stream
def anon():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith('RssAnon:'))
for _ in range(5):
    stream.analyze(sys.argv[1], fps=30, voice=False, progress=False)
    print(anon(), flush=True)
"""


@pytest.mark.integration
def test_repeated_analyses_in_one_process_do_not_grow_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook calling `stream.analyze` again and again: memory stays where the second call
    left it (the first call's growth is the models' working memory)."""
    from bench.bench_mediapipe import build_gallery

    from .conftest import MODELS

    gallery = tmp_path / "gallery9_2s.mp4"
    build_gallery(gallery, seconds=2.0)
    monkeypatch.setenv("EMOTION_STREAM_MODELS", str(MODELS))
    out = subprocess.run([sys.executable, "-c", _REPEAT, str(gallery)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    anon = [float(x) for x in out.stdout.split()]
    growth = anon[4] - anon[1]
    print(f"RssAnon after each of 5 analyses (MiB): {[round(a) for a in anon]}; growth from the "
          f"2nd to the 5th {growth:+.1f} MiB (bound {REPEAT_GROWTH_MIB:g})")  # fmt: skip
    assert len(anon) == 5
    assert growth <= REPEAT_GROWTH_MIB
