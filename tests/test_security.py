"""Abuse and privacy: what is written to disk, inputs that used to break, limits that must hold."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.models.registry import Manifest
from stream.models.runtime import SessionFactory
from stream.offline.analyze import analyze_file
from stream.offline.media import read_frames

from .conftest import MODELS, ROOT, VIDEO

CLIP = VIDEO / "pyfeat_single_face.mp4"  # 2.43 s, 72 frames at 30 fps, one face, mp3 audio


# --- what is written to disk ---------------------------------------------------------------------


def _fresh_env(tmp: Path) -> tuple[dict[str, str], Path, Path]:
    """Environment with an empty HOME, no XDG cache override and a private TMPDIR."""
    home, scratch = tmp / "home", tmp / "scratch"
    home.mkdir()
    scratch.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(scratch)}
    env.update(EMOTION_STREAM_MODELS=str(MODELS), PYTHONPATH=str(ROOT))
    for var in (
        "XDG_CACHE_HOME",
        "EMOTION_STREAM_CACHE",
        "EMOTION_STREAM_CONFIG",
        "ORT_DISABLE_TELEMETRY",
        "ORT_TELEMETRY_DISABLED",
    ):
        env.pop(var, None)
    return env, home, scratch


def _written(*roots: Path) -> list[str]:
    return sorted(str(p.relative_to(r.parent)) for r in roots for p in r.rglob("*") if p.is_file())


def test_analyze_writes_nothing_but_the_hash_cache(tmp_path: Path) -> None:
    env, home, scratch = _fresh_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "stream", "analyze", str(CLIP)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    files = _written(home, scratch, cwd)
    print("files written by analyze:", files)
    # ONNX Runtime's telemetry used to add .cache/Microsoft/DeveloperTools/.onnxruntime/
    # {deviceid,onnxruntime.db}; the documented sha256 cache is the only file allowed.
    assert files == ["home/.cache/emotion-stream/hashes.json"]


def test_serve_writes_nothing_but_the_hash_cache(tmp_path: Path) -> None:
    import websockets.sync.client as wsc

    env, home, scratch = _fresh_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "stream", "serve", "--port", "0"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is listening (or exits)
        assert "serving on http://127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        with wsc.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "hello", "consent": True}))
            assert json.loads(ws.recv(timeout=20))["type"] == "session.started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    files = _written(home, scratch, cwd)
    print("files written by serve:", files)
    assert files == ["home/.cache/emotion-stream/hashes.json"]


# --- models --------------------------------------------------------------------------------------


def test_warm_up_runs_for_every_model(
    factory: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    names = [s.name for s in Manifest.load() if (MODELS / s.file).is_file()]
    assert "silero_vad_v6" in names and len(names) >= 7
    caplog.set_level(logging.WARNING, logger="stream.models.runtime")
    ran = {name: SessionFactory._warm_up(factory.get(name), name) for name in names}
    print("warm-up:", ran)
    # Silero's state [2, batch, 128] used to get 64 as its batch and fail on every start.
    assert all(ran.values()), ran
    assert "warm-up failed" not in caplog.text


# --- files whose timestamps restart -------------------------------------------------------------


def _remux_ts(src: Path, dst: Path) -> None:
    """Copy a clip's video and audio packets into MPEG-TS (what `ffmpeg -c copy a.ts` does)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


@pytest.fixture(scope="module")
def concatenated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same clip twice, concatenated as MPEG-TS (`cat a.ts a.ts`): timestamps restart."""
    folder = tmp_path_factory.mktemp("ts")
    part = folder / "a.ts"
    _remux_ts(CLIP, part)
    both = folder / "aa.ts"
    both.write_bytes(part.read_bytes() * 2)
    return both


def test_timestamp_restart_continues_media_time(concatenated: Path) -> None:
    warnings: list[str] = []
    frames = list(read_frames(concatenated, 0.0, warnings))
    times = np.array([f.t for f in frames])
    sampled = list(read_frames(concatenated, 10.0))
    print(f"{len(frames)} frames to {times[-1]:.2f} s; {len(sampled)} at 10 fps; {warnings}")
    assert len(frames) == 144
    assert np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(143 / 30, abs=0.05)
    # The second half used to be skipped: its times were below the sampling grid.
    assert 46 <= len(sampled) <= 50 and sampled[-1].t > 4.6
    assert len(warnings) == 1 and "restart" in warnings[0] and "2.37 s" in warnings[0]


def test_analyze_covers_both_halves_of_a_concatenated_file(
    concatenated: Path, config: Config, stages: Stages
) -> None:
    result = analyze_file(concatenated, config, stages, fps=10.0).to_dict()
    face = result["faces"][0]
    print("concatenated:", result["analysis"]["analysed_frames"], face["visible_s"])
    assert result["analysis"]["complete"] is True
    assert result["analysis"]["analysed_frames"] >= 46
    assert len(result["faces"]) == 1 and face["visible_s"] > 4.4
