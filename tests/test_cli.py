"""The command line as a user runs it: real subprocesses, real files, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.models.registry import Manifest

from .conftest import MEDIA, MODELS, ROOT, VIDEO


def run(*args: str, models: Path = MODELS) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMOTION_STREAM_MODELS": str(models), "PYTHONPATH": str(ROOT)}
    env.pop("EMOTION_STREAM_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


@pytest.mark.integration
def test_analyze_writes_summary_json_csv_html(tmp_path: Path) -> None:
    clip = VIDEO / "pyfeat_WolfgangLanger_Pexels.mp4"
    out = run(
        "analyze",
        str(clip),
        "--json",
        str(tmp_path / "a.json"),
        "--csv",
        str(tmp_path / "a.csv"),
        "--html",
        str(tmp_path / "a.html"),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    face_line = next(x for x in lines if x.startswith("Face 1"))
    assert "dominant: " in face_line and "% " in face_line and "visible 19." in face_line
    assert any(x.startswith("Overall  dominant: ") for x in lines)
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["schema_version"] == 1 and len(data["faces"]) == 1
    face = data["faces"][0]
    assert face["label"] == "Face 1" and face["valence_arousal"]["estimated"] is True
    assert sum(face["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert face["mean_probabilities"]["contempt"] is None
    assert "contempt" in data["analysis"]["labels_not_supported"]
    # The clip goes from crying to laughing: both must show up, happiness at the end.
    assert face["shares"]["happiness"] > 0.3 and face["shares"]["sadness"] > 0.1
    with (tmp_path / "a.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 150 and rows[0]["face_name"] == "Face 1" and rows[0]["p_contempt"] == ""
    assert rows[-1]["label"] == "happiness"
    html = (tmp_path / "a.html").read_text()
    # Room over time and the face's strips, on one axis; the face's thumbnail.
    assert html.count("<svg class='strip'") == 2 and "data:image/jpeg;base64," in html
    assert "not feelings" in html


@pytest.mark.integration
def test_analyze_json_to_stdout_is_clean_json() -> None:
    out = run("analyze", str(MEDIA / "identities/face_recognition/two_people.jpg"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [f["label"] for f in data["faces"]] == ["Face 1", "Face 2"]
    assert "Face 1  expression: " in out.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["analyze", "/nonexistent/clip.mp4"], 3, "file not found"),
        (["analyze", "pyproject.toml"], 3, "not a video"),
        (["analyze", str(VIDEO / "pyfeat_no_face.mp4"), "--no-voice"], 4, "no faces found"),
        (["analyze", str(MEDIA / "audio/pyannote_sample.wav"), "--no-voice"], 3, "audio only"),
        (["analyze", str(VIDEO / "fer_test.mp4"), "--fps", "0"], 2, "analyze.fps"),
        (["analyze", str(VIDEO / "fer_test.mp4"), "--fps", "abc"], 2, "invalid float"),
    ],
)
def test_bad_input_gives_one_message_and_exit_code(
    args: list[str], code: int, message: str
) -> None:
    out = run(*args)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def _noise_wav(path: Path, seconds: float = 3.0, peak_dbfs: float = -40.0) -> Path:
    """Tone-free white noise (no speech in it), 16 kHz mono 16-bit, made at test time."""
    import wave

    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 1.0, int(16000 * seconds)) * 10 ** (peak_dbfs / 20)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.integration
def test_audio_without_speech_says_no_speech_not_no_faces(tmp_path: Path) -> None:
    out = run("analyze", str(_noise_wav(tmp_path / "noise.wav")))
    print(out.stdout, out.stderr)
    assert out.returncode == 7, (out.stdout, out.stderr)
    assert f"no speech found in {tmp_path / 'noise.wav'}" in out.stderr
    assert "no faces" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.integration
def test_faceless_silent_video_says_no_faces_and_no_speech(tmp_path: Path) -> None:
    clip = tmp_path / "grey.mp4"
    make = [
        *("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=320x240:r=10:d=2"),
        *("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", "-shortest"),
        *("-c:v", "mpeg4", "-c:a", "aac", str(clip)),
    ]
    subprocess.run(make, check=True, timeout=60)
    out = run("analyze", str(clip))
    print(out.stdout, out.stderr)
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert f"no faces and no speech found in {clip}" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    # Without the voice, only the faces are looked for.
    quiet = run("analyze", str(clip), "--no-voice")
    assert quiet.returncode == 4 and f"no faces found in {clip}" in quiet.stderr


@pytest.mark.integration
def test_batch_marks_audio_without_speech_no_speech(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _noise_wav(folder / "noise.wav")
    short = folder / "speech.wav"  # 3 s of read speech
    cut = ["ffmpeg", "-v", "error", "-i", str(MEDIA / "audio/librosa_libri_198-209-0000.wav")]
    subprocess.run([*cut, "-t", "3", str(short)], check=True, timeout=60)
    out = run("analyze", str(folder), "--out", str(tmp_path / "out"), "--no-progress")
    print(out.stdout, out.stderr)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert f"no_speech {folder / 'noise.wav'}: no speech found" in out.stdout
    assert f"ok       {short}: no faces; speech analysed" in out.stdout  # a result
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["counts"] == {"ok": 1, "no_faces": 0, "no_speech": 1, "skipped": 0, "failed": 0}


@pytest.mark.integration
def test_missing_models_name_the_file_and_folder(tmp_path: Path) -> None:
    out = run("analyze", str(VIDEO / "fer_test.mp4"), models=tmp_path)
    assert out.returncode == 5
    assert "yunet_n_dynamic.onnx" in out.stderr and str(tmp_path) in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_models_list_and_verify(tmp_path: Path) -> None:
    ok = run("models", "verify")
    assert ok.returncode == 0, ok.stderr
    n = len(list(Manifest.load()))
    assert n >= 10 and ok.stdout.count(" ok ") == n
    missing = run("models", "verify", models=tmp_path)
    assert missing.returncode == 5 and missing.stdout.count("missing") == n
    listing = run("models", "list", models=tmp_path)
    assert listing.returncode == 0 and "yunet_n_dynamic" in listing.stdout


def test_help_teaches() -> None:
    out = run("--help")
    assert out.returncode == 0
    for needle in ("examples:", "EMOTION_STREAM_MODELS", "exit status", "not feelings"):
        assert needle in out.stdout
    sub = run("analyze", "--help")
    assert "--fps" in sub.stdout and "--html" in sub.stdout and "share" in sub.stdout


@pytest.mark.integration
def test_serve_starts_and_shuts_down_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    import signal

    import websockets.sync.client as wsc

    env = {**os.environ, "EMOTION_STREAM_MODELS": str(MODELS), "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "stream",
        "serve",
        "--port",
        "0",
        "--save-summaries",
        str(tmp_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is listening (or exits)
        assert "serving on http://127.0.0.1:" in line, (
            line,
            proc.stderr.read() if proc.stderr else "",
        )
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        with wsc.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "hello", "consent": True, "purpose": "cli test"}))
            started = json.loads(ws.recv())
            assert started["type"] == "session.started" and started["purpose"] == "cli test"
            proc.send_signal(signal.SIGINT)
            rest = []
            try:
                while True:
                    rest.append(json.loads(ws.recv(timeout=20))["type"])
            except Exception:
                pass
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err  # Ctrl-C: interrupted (--help)
    assert rest[-2:] == ["session.summary", "session.ended"]
    assert "shutting down" in out and "Traceback" not in err
    saved = list(tmp_path.glob("session-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["type"] == "session.summary"


@pytest.mark.integration
def test_serve_port_in_use_is_one_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("serve", "--port", str(port))
    assert out.returncode == 1 and "cannot listen on 127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr
