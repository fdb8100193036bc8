"""Speakers and facial actions: what they cost. Not a test: it prints.

1. Diarization: audio-only `analyze` of real recordings with and without diarization (speaker
   embeddings + clustering), as seconds per minute of audio and real-time factors.
2. Facial actions: landmarks + 52 blendshapes per face (median ms), and analysed frames/s of
   one live-budgeted 4-face stream with facial actions on and off.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_speakers.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_streams import run as run_streams  # noqa: E402
from bench.bench_vision import SHARED, DriftScene, load_faces  # noqa: E402
from stream.analysis.stages import Stages  # noqa: E402
from stream.core.config import ENV_MODELS, Config, load_config  # noqa: E402
from stream.offline.analyze import analyze_file  # noqa: E402


def write_wav(audio: np.ndarray, path: Path, rate: int = 16_000) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        f = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        f.sample_rate = rate
        for pkt in s.encode(f):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


def diarization(cfg: Config, files: list[Path]) -> None:
    print("1. diarization (audio-only analyze; denoise + VAD + pitch + prosody in both columns)")
    print(f"  {'file':<28} {'audio s':>7} {'without s':>9} {'with s':>7} {'diar. s/min':>11} "
          f"{'total s/min':>11} {'x real time':>11} {'speakers':>8}")  # fmt: skip
    runs = {}
    for on in (False, True):
        c = cfg.replace("diarization", enabled=on)
        runs[on] = (c, Stages(c))
    for path in files:
        times: dict[bool, float] = {}
        speakers = 0
        duration = 0.0
        for on in (False, True, False, True):  # interleaved, best of two
            c, st = runs[on]
            t0 = time.perf_counter()
            a = analyze_file(path, c, st)
            wall = time.perf_counter() - t0
            times[on] = min(times.get(on, 1e9), wall)
            duration = a.info.duration
            if on and a.speakers is not None:
                speakers = len(a.speakers.speakers)
        extra = max(times[True] - times[False], 0.0)
        print(f"  {path.name[:28]:<28} {duration:>7.1f} {times[False]:>9.2f} {times[True]:>7.2f} "
              f"{60 * extra / duration:>11.2f} {60 * times[True] / duration:>11.2f} "
              f"{duration / times[True]:>11.1f} {speakers:>8}")  # fmt: skip


def facial_actions(cfg: Config, seconds: float) -> None:
    print("\n2. facial actions (MediaPipe landmarks + blendshapes from our detector's box)")
    st = Stages(cfg.replace("audio", enabled=False), voice=False)
    model = st.action_model
    assert model is not None, "actions.enabled is false in the config"
    faces = load_faces(SHARED / "media" / "identities", st.vision(), 8)
    scene = DriftScene(faces[:4])
    frame = scene.frame(0)
    dets = st.vision().detector(frame)
    rgb = np.ascontiguousarray(frame.image[:, :, ::-1])
    ms = []
    for _ in range(10):
        for i in range(len(dets)):
            t0 = time.perf_counter()
            model(rgb, dets.boxes[i], dets.landmarks[i][:2])
            ms.append((time.perf_counter() - t0) * 1e3)
    print(f"  per face: median {statistics.median(ms[4:]):.1f} ms ({len(dets)} faces x 10)")
    for on in (False, True):
        c = cfg.replace("actions", enabled=on).replace("audio", enabled=False)
        fps, lat = run_streams(Stages(c, voice=False), [DriftScene(faces[:4], 1)], seconds)
        print(f"  4-face live stream, actions {'on ' if on else 'off'}: {fps[0]:.1f} analysed "
              f"fps, p95 latency {float(np.percentile(lat, 95)):.0f} ms")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per live-stream run")
    p.add_argument("--voice-only", action="store_true", help="skip the facial-action part")
    args = p.parse_args(argv)
    models = os.environ.get(ENV_MODELS) or str(SHARED / "models")
    cfg = load_config().replace("models", dir=models)
    from tests.compose_voices import compose

    work = Path(tempfile.mkdtemp(prefix="bench-speakers-"))
    call = work / "call_3_speakers_2min.wav"
    audio, _ = compose(["libri0", "libri1", "libri2"], 24, seed=3)
    write_wav(audio[: 120 * 16_000], call)
    diarization(cfg, [SHARED / "media" / "audio" / "pyannote_sample.wav", call])
    if not args.voice_only:
        facial_actions(cfg, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
