"""The public Python API (`import stream`): options, typed results, pandas, plots, errors, many
files, and `Analyzer` fed a clip's frames and audio."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stream
from stream.analysis.fakes import FakeFace, FakeStages, fake_audio, fake_frames
from stream.api.run import make_config
from stream.cli import main
from stream.client import Frame, Prosody
from stream.core.config import Config, load_config
from stream.core.errors import ConfigError, MediaError, ModelError, NoFacesError
from stream.live.events import Gesture
from stream.models.runtime import SessionFactory
from stream.offline.media import probe, read_audio, read_frames
from stream.vision.headpose import CanonicalFace

from .compose_heads import TASK, HeadRenderer, photo_faces, script
from .conftest import MODELS, ROOT, VIDEO
from .test_gestures import ProductPath

ONE_FACE = VIDEO / "pyfeat_single_face.mp4"  # 2.4 s, one face, speech (mp3)
NO_FACE = VIDEO / "pyfeat_no_face.mp4"
TALK = VIDEO / "mexca_test_video_audio_5_seconds.mp4"  # 5 s, debate, speech


# -- without models ----------------------------------------------------------------------------
def test_import_stream_is_lazy_and_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import stream; "
        "dt = time.perf_counter() - t; "
        "print(dt, sorted(m for m in sys.modules if m.startswith('stream')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, loaded = out.stdout.split(" ", 1)
    print(f"import stream: {1e3 * float(dt):.1f} ms, modules {loaded.strip()}")
    assert loaded.strip() == "['stream']"  # nothing else loads until a name is used


def test_the_stub_declares_every_export() -> None:
    tree = ast.parse((ROOT / "stream" / "__init__.pyi").read_text())
    declared = {
        a.asname or a.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    }
    assert declared == set(stream._EXPORTS)
    for name in stream._EXPORTS:
        assert getattr(stream, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = stream.nothing  # type: ignore[attr-defined]


def test_options_are_the_cli_options() -> None:
    cfg = make_config(fps=5, voice=False, models="/m", provider="cpu", config=None)
    assert cfg.analyze.fps == 5.0 and not cfg.audio.enabled
    assert cfg.models.dir == "/m" and cfg.runtime.provider == "cpu"
    assert make_config(config=cfg) is cfg
    with pytest.raises(ConfigError, match="fps must be > 0"):
        make_config(fps=0)
    with pytest.raises(ConfigError, match="provider must be"):
        make_config(provider="tpu")
    with pytest.raises(ConfigError, match="config file not found"):
        make_config(config="/nonexistent.toml")


def test_models_are_reused_across_analysis_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.api import run

    loads: list[Config] = []

    def load(cfg: Config) -> object:
        loads.append(cfg)
        return object()

    monkeypatch.setattr(run, "_cached", None)
    monkeypatch.setattr(run, "Stages", load)
    base = make_config(models="/m")
    first = run.stages_for(base)
    assert run.stages_for(make_config(config=base, fps=3)) is first  # only the rate differs
    assert run.stages_for(make_config(config=base, voice=False)) is not first
    assert len(loads) == 2


def test_user_errors_carry_no_internal_frames(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        stream.analyze(tmp_path / "missing.mp4")
    assert "no such file" in str(info.value) and info.value.exit_code == 3
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ConfigError):  # checked before any model loads
        stream.analyze(broken, fps=-1)
    with pytest.raises(MediaError) as info:  # not ModelError: the file is read before models
        stream.analyze(broken, models=tmp_path)
    frames = traceback.extract_tb(info.value.__traceback__)
    where = [Path(f.filename).parent.name for f in frames]
    print("traceback frames:", [(Path(f.filename).name, f.name) for f in frames])
    assert not {"offline", "analysis", "core", "vision", "voice"} & set(where), where


@pytest.mark.integration
def test_a_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        stream.analyze(ONE_FACE, models=tmp_path)
    assert info.value.exit_code == 5


def test_ray_missing_is_a_config_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    results = stream.analyze_many(tmp_path, ray=True, models=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"emotion-stream\[ray\]") as info:
        next(results)
    where = [Path(f.filename).parent.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "api" in where and "offline" not in where, where


def test_analyzer_on_fake_stages_events_results_and_audio_chunks() -> None:
    """The Analyzer over the fake models (milliseconds): two people in, typed events and a
    typed result out; audio as int16 stereo chunks with a gap filled with silence."""
    cfg = load_config(ROOT / "configs" / "default.toml", env={})
    an = stream.Analyzer(config=cfg, stages=FakeStages(cfg), name="fake")
    people = [FakeFace(0, (30, 40, 110, 140)), FakeFace(2, (180, 50, 260, 150))]
    voice = (fake_audio([(0.2, 2.8, 180.0)], 3.0) * 32767).astype(np.int16)
    stereo = np.stack([voice, voice], axis=1)  # (n, 2)
    events: list[Any] = []
    step = 4800  # 0.1 s at 48 kHz
    for i, frame in enumerate(fake_frames(90, people, fps=30.0)):  # 3 s at 30 fps
        a = round(frame.t * 48_000)
        if i % 3 == 0 and not 1.0 <= frame.t < 1.3:  # one chunk per 0.1 s; 0.3 s missing
            events += an.push_audio(stereo[a : a + step], 48_000, frame.t)
        events += an.push_video(frame.image, frame.t)
    result = an.close()
    frames = [e for e in events if isinstance(e, Frame)]
    prosody = [e for e in events if isinstance(e, Prosody)]
    print(f"{len(frames)} frame events, {len(prosody)} prosody events; {result}")
    assert len(frames) == 30  # 30 fps in, 10 fps analysed (mouths sampled in between)
    last = frames[-1]  # frames received up to its time (30 fps from t = 0), rate measured
    assert last.metrics["received_frames"] == round(last.media_t * 30) + 1
    assert last.metrics["analysed_fps"] > 0
    assert {f["id"] for e in frames for f in e.faces} == {1, 2}
    assert [f.id for f in result.faces] == [1, 2] and result.source.kind == "video"
    assert prosody and any(e.report.get("speaking") for e in prosody)
    assert abs(an._audio["audio"].samples - 3.0) < 0.15  # the gap was filled with silence
    assert len(result.timeline()) == sum(f.analysed_frames for f in result.faces)
    assert result.speakers and result.turns  # who spoke when (the fake voice prints)
    assert {t.speaker_id for t in result.turns} == {sp.id for sp in result.speakers}
    voices = [p.speaker.id for p in result.participants if p.speaker is not None]
    assert sorted(voices) == sorted(sp.id for sp in result.speakers)  # each voice once
    assert {p.face.id for p in result.participants if p.face} == {1, 2}
    with pytest.raises(MediaError, match="float or int16"):
        stream.Analyzer(config=cfg, stages=FakeStages(cfg)).push_audio(
            np.zeros(10, np.int32), 48_000, 0.0
        )
    off = cfg.replace("audio", enabled=False)
    with pytest.raises(ConfigError, match="voice analysis is off"):
        stream.Analyzer(config=off, stages=FakeStages(off)).push_audio(np.zeros(10), 16_000, 0)


# -- with models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_face() -> stream.Analysis:
    return stream.analyze(ONE_FACE, models=MODELS)


@pytest.mark.integration
def test_typed_result_and_the_same_json_as_the_cli(
    one_face: stream.Analysis, tmp_path: Path
) -> None:
    a = one_face
    assert a.source.kind == "video" and a.complete and a.analysed_frames > 0
    assert [f.id for f in a.faces] == [1]
    face = a.face(1)
    assert face.dominant in face.shares and abs(sum(face.shares.values()) - 1) < 1e-3
    assert face.visible_s > 2.0 and face.tracklets and face.tracklets[0].from_s < 0.5
    assert [p.face for p in a.participants] == a.faces  # no voice: each face alone
    assert a.overall.faces == 1
    timeline = a.timeline(1)
    assert len(timeline) == face.analysed_frames
    assert all(s.label in (*a.labels_supported, "uncertain") for s in timeline)
    cli_json = tmp_path / "cli.json"
    assert main(["analyze", str(ONE_FACE), "--json", str(cli_json), "--models", str(MODELS)]) == 0
    ours, theirs = json.loads(a.to_json()), json.loads(cli_json.read_text())
    for doc in (ours, theirs):  # measured times differ between runs
        doc["analysis"].pop("wall_s")
        doc["analysis"].pop("stage_ms_mean")
    assert ours == theirs
    assert "<html" in a.write_html(tmp_path / "r.html").read_text().lower()
    assert a.write_csv(tmp_path / "r.csv").read_bytes().decode() == a.to_csv()


@pytest.mark.integration
def test_pandas_frames_and_plot(one_face: stream.Analysis) -> None:
    pytest.importorskip("pandas")
    df = one_face.to_pandas()
    print(df.head(3).to_string())
    assert {"time_s", "face_id", "label", "confidence"} <= set(df.columns)
    header = one_face.to_csv().splitlines()[0].split(",")
    assert list(df.columns) == header  # the CSV's columns
    per_face = df.groupby("face_id").size().to_dict()
    assert per_face == {f.id: f.analysed_frames for f in one_face.faces}  # one row per frame
    assert df["time_s"].is_monotonic_increasing
    summary = one_face.summary_frame()
    assert (
        list(summary["face_id"]) == [1] and summary.loc[0, "dominant"] == one_face.faces[0].dominant
    )
    fig = one_face.plot(1)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == len(one_face.labels_supported)
    with pytest.raises(KeyError):
        one_face.plot(9)


@pytest.mark.integration
def test_without_pandas_the_error_names_the_extra(
    one_face: stream.Analysis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ConfigError, match=r"emotion-stream\[pandas\]"):
        one_face.to_pandas()
    with pytest.raises(ConfigError, match=r"emotion-stream\[pandas\]"):
        one_face.summary_frame()


@pytest.mark.integration
def test_no_faces_is_an_error_unless_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NoFacesError) as info:
        stream.analyze(NO_FACE, models=MODELS, voice=False)
    assert info.value.exit_code == 4
    capsys.readouterr()
    empty = stream.analyze(NO_FACE, models=MODELS, voice=False, allow_empty=True, progress=True)
    assert empty.faces == [] and empty.analysed_frames > 0
    bar = capsys.readouterr().err
    assert NO_FACE.name in bar and "%|" in bar, bar  # the progress bar in media seconds


@pytest.mark.integration
def test_analyzer_fed_a_clips_frames_gives_the_same_faces() -> None:
    cfg = make_config(models=MODELS, voice=False)
    a = stream.analyze(ONE_FACE, config=cfg)
    events: list[Any] = []
    with stream.Analyzer(config=cfg, name=str(ONE_FACE)) as an:
        for f in read_frames(ONE_FACE, 0):  # every frame, RGB: the analyzer keeps to 10 fps
            events += an.push_video(np.ascontiguousarray(f.image[..., ::-1]), f.t, rgb=True)
        b = an.close(end_s=probe(ONE_FACE).duration)
    assert an.result is b and an.close() is b
    frames = [e for e in events if isinstance(e, Frame)]
    print(f"analyze: {a}; Analyzer: {b}, {len(frames)} frame events")
    assert len(frames) == a.analysed_frames == b.analysed_frames
    assert [(f.id, f.dominant, f.shares, f.visible_s) for f in b.faces] == [
        (f.id, f.dominant, f.shares, f.visible_s) for f in a.faces
    ]
    assert b.to_csv() == a.to_csv()
    assert {face["id"] for e in frames for face in e.faces} == {1}
    with pytest.raises(ConfigError, match="closed"):
        an.push_video(np.zeros((8, 8, 3), np.uint8), 9.0)


@pytest.mark.integration
def test_analyzer_with_audio_gives_prosody_and_matches_voices() -> None:
    cfg = make_config(models=MODELS)
    an = stream.Analyzer(config=cfg, name=str(TALK))
    with pytest.raises(MediaError, match="HxWx3 uint8"):
        an.push_video(np.zeros((8, 8), np.uint8), 0.0)
    offset, audio = read_audio(TALK)
    chunks = []
    for fr in audio:
        x = fr.to_ndarray()  # planar float (channels, n) or packed
        x = x.T if fr.format.is_planar else x.reshape(-1, len(fr.layout.channels))
        chunks.append((x.astype(np.float32), fr.sample_rate))
    events: list[Any] = []
    t_audio = offset
    pending = iter(chunks)
    for f in read_frames(TALK, 0):
        while t_audio <= f.t + 0.1:  # audio interleaved with video by time
            item = next(pending, None)
            if item is None:
                break
            x, rate = item
            events += an.push_audio(x, rate, t_audio)
            t_audio += len(x) / rate
        events += an.push_video(f.image, f.t)
    for x, rate in pending:
        events += an.push_audio(x, rate, t_audio)
        t_audio += len(x) / rate
    result = an.close(end_s=probe(TALK).duration)
    prosody = [e for e in events if isinstance(e, Prosody)]
    speaking = [e for e in prosody if e.report.get("speaking")]
    matched = [e for e in speaking if e.face_id is not None]
    print(
        f"{len(prosody)} prosody events, {len(speaking)} speaking, {len(matched)} matched to a "
        f"face; faces {[f.id for f in result.faces]}, speakers {len(result.speakers)}"
    )
    assert result.faces and prosody and speaking
    assert len(matched) >= 0.5 * len(speaking)  # mouths were sampled between analysed frames
    assert "speaking" in result.to_csv().splitlines()[0]


@pytest.mark.integration
def test_analyze_many_yields_results_and_writes_the_index(tmp_path: Path, config: Config) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ONE_FACE, folder / ONE_FACE.name)
    shutil.copy(NO_FACE, folder / NO_FACE.name)
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    got = list(stream.analyze_many(folder, out=out, models=MODELS, voice=False, workers=2))
    status = {r.path.name: r.status for r in got}
    print(status)
    assert status == {ONE_FACE.name: "ok", NO_FACE.name: "no_faces", "broken.mp4": "failed"}
    ok = next(r for r in got if r.status == "ok")
    assert ok.analysis is not None and [f.id for f in ok.analysis.faces] == [1]
    assert Path(ok.row.outputs["json"]).is_file()
    assert next(r for r in got if r.status == "failed").analysis is None
    index = json.loads((out / "index.json").read_text())
    assert index["counts"] == {"ok": 1, "no_faces": 1, "no_speech": 0, "skipped": 0, "failed": 1}
    again = list(stream.analyze_many([str(folder)], out=out, models=MODELS, voice=False))
    assert sorted(r.status for r in again) == ["failed", "skipped", "skipped"]
    nothing = list(stream.analyze_many([ONE_FACE], models=MODELS, voice=False))
    assert [r.status for r in nothing] == ["ok"] and not nothing[0].row.outputs
    with pytest.raises(MediaError, match="not found"):
        stream.analyze_many(tmp_path / "missing.mp4")
    with pytest.raises(ConfigError, match="workers"):
        stream.analyze_many(folder, workers=0)


@pytest.mark.integration
def test_analyze_many_on_ray_returns_the_analyses(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        got = list(stream.analyze_many([ONE_FACE], models=MODELS, voice=False, ray=True))
    finally:
        ray.shutdown()
    assert [(r.status, r.path.name) for r in got] == [("ok", ONE_FACE.name)]
    assert got[0].analysis is not None and [f.id for f in got[0].analysis.faces] == [1]


@pytest.mark.integration
def test_analyzer_reports_nods_and_shakes_as_events(factory: SessionFactory) -> None:
    """A real photo turned in 3D with scripted nods and shakes, pushed frame by frame: the
    `Analyzer` returns the `gesture` events the live session publishes, at the scripted times."""
    cfg = make_config(models=MODELS, voice=False)
    path = ProductPath(cfg, factory)
    img, lm = photo_faces(path.det, path.act)[0]
    renderer = HeadRenderer(img, lm, CanonicalFace.from_task(TASK))
    ypr, truth = script(100, 30.0)
    events: list[Any] = []
    with stream.Analyzer(config=cfg, fps=10.0, name="turned photo") as an:
        for i, (y, p, r) in enumerate(ypr):
            events += an.push_video(renderer.render(float(y), float(p), float(r)), i / 10)
        result = an.close()
    gestures = [e for e in events if isinstance(e, Gesture)]
    hits = sum(
        any(g.gesture == k.kind and g.start < k.end and k.start < g.end for g in gestures)
        for k in truth
    )
    print(f"Analyzer: {len(gestures)} gesture events, {hits}/{len(truth)} scripted found")
    assert gestures and hits / len(truth) >= 0.5
    assert all(g.face == 1 for g in gestures)
    assert len(result.faces[0].gestures) >= len(gestures)  # the result keeps them too
