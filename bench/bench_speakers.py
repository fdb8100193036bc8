"""Speakers and facial actions: what they cost. Not a test: it prints.

1. Diarization: audio-only `analyze` of real recordings with and without diarization (speaker
   embeddings + clustering), as seconds per minute of audio and real-time factors.
1b. Composed calls (tests/compose_calls.py, issue 17): the diarizer alone over the test calls
   (short turns, same-gender pairs, a one-word speaker, overlap) and over held-out random
   combinations (EmoDB speakers in two disjoint folds, single speakers): speaker count, share of
   speech on the right speaker, DER with and without overlap, CPU seconds per audio minute;
   `--before REV` runs stream/voice/diarize.py of that git revision beside the current one.
1c. Why the EmoDB calls fall short (`--why`, `--pitch` adds f0 per turn): with the true count,
   the share on the right speaker that k-means on the turn prints reaches, that the true
   speakers' centroids reach, whether the true partition fits the prints better than k-means'
   does, and how much removing the prints' f0-dependent part would give.
2. Facial actions: landmarks + 52 blendshapes per face (median ms), and analysed frames/s of
   one live-budgeted 4-face stream with facial actions on and off.

    EMOTION_STREAM_MODELS=../shared/models python bench/bench_speakers.py [--before 7127166]
    EMOTION_STREAM_MODELS=../shared/models python bench/bench_speakers.py --why --pitch
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_streams import run as run_streams  # noqa: E402
from bench.bench_vision import SHARED, DriftScene, load_faces  # noqa: E402
from stream.analysis.stages import Stages  # noqa: E402
from stream.core.config import ENV_MODELS, Config, load_config  # noqa: E402
from stream.offline.analyze import analyze_file  # noqa: E402


def write_wav(audio: np.ndarray, path: Path, rate: int = 16_000) -> Path:
    """Mono s16 WAV at `rate`; returns `path`."""
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
    return path


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


def diarizer_module(rev: str | None) -> Any:
    """stream.voice.diarize as it is, or as it was at git revision `rev`."""
    import importlib.util
    import subprocess

    import stream.voice.diarize as current

    if rev is None:
        return current
    src = subprocess.run(
        ["git", "show", f"{rev}:stream/voice/diarize.py"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="diarize-")) / f"diarize_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"diarize_{rev}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


FOLDS = {
    "fold A": ["e03", "e10", "e11", "e08", "e09"],
    "fold B": ["e12", "e15", "e13", "e14", "e16"],
}


def test_and_held_out_calls() -> tuple[list[Any], dict[str, list[Any]]]:
    """The test calls (+ 3 LibriSpeech readers) and the held-out random combinations: 12 calls
    of 2-5 speakers per EmoDB fold (disjoint speakers) and 5 one-speaker calls."""
    from tests.compose_calls import compose_call
    from tests.test_diarize_turns import OTHERS, SHORT_TURNS

    calls = [compose_call(k, **v) for k, v in {**SHORT_TURNS, **OTHERS}.items()]  # type: ignore[arg-type]
    calls.append(compose_call("3 readers (LibriSpeech)", ["l0", "l1", "l2"], turns=24, seed=12))
    held: dict[str, list[Any]] = {"fold A": [], "fold B": [], "one speaker": []}
    rng = np.random.default_rng(7)
    for f, (fold, pool) in enumerate(FOLDS.items()):
        for i in range(12):
            k = 2 + i % 4
            who = [str(x) for x in rng.choice(pool, k, replace=False)]
            one = who[-1] if i % 3 == 0 and k >= 3 else None
            held[fold].append(compose_call(
                f"{fold} {i}", who, turns=8 * k, one_word=one, overlap_s=0.4 if i % 2 else 0.0,
                seed=1000 + 50 * f + i,
            ))  # fmt: skip
    for i, s in enumerate(["e03", "e08", "e12", "e16", "l1"]):
        held["one speaker"].append(compose_call(f"one {s}", [s], turns=14, seed=200 + i))
    return calls, held


def composed_calls(cfg: Config, before: str | None) -> None:
    from stream.voice.vad import SileroVad

    print("\n1b. composed calls: the diarizer alone (Silero VAD in 0.1 s chunks, as the tests)")
    st = Stages(cfg)
    emb, vad_session = st.speaker_embedder, st.factory.get("silero_vad_v6")
    calls, held = test_and_held_out_calls()
    versions = {"now": diarizer_module(None)}
    if before:
        versions[before] = diarizer_module(before)

    def run(mod: Any, call: Any) -> tuple[int, dict[str, float], dict[str, float], float]:
        vad = SileroVad(vad_session)
        steps = []
        for i in range(0, len(call.audio), 1600):
            steps.append((call.audio[i : i + 1600], vad.process(call.audio[i : i + 1600])))
        d = mod.Diarizer(emb)
        t0 = time.process_time()
        for chunk, s in steps:
            d.add(chunk, s)
        d.flush()
        hyp = [(x.start, x.end, str(x.speaker)) for x in d.segments()]
        cpu = time.process_time() - t0
        e = mod.diarization_error(call.turns, hyp)
        e_no = mod.diarization_error(call.turns, hyp, skip_overlap=True)
        return len({h[2] for h in hyp}), e, e_no, cpu

    print(f"  {'call':<48} {'version':>8} {'count':>7} {'right':>6} {'DER':>6} {'DER w/o ov':>10}")
    cpu = dict.fromkeys(versions, 0.0)
    minutes = 0.0
    for call in calls:
        minutes += len(call.audio) / 16000 / 60
        for name, mod in versions.items():
            found, e, e_no, c = run(mod, call)
            cpu[name] += c
            print(f"  {call.name[:48]:<48} {name:>8} {len(call.speakers):>3}/{found:<3} "
                  f"{e['right']:>6.1%} {e['der']:>6.1%} {e_no['der']:>10.1%}")  # fmt: skip
    for name in versions:
        print(f"  diarizer CPU ({name}): {60 * cpu[name] / minutes / 60:.2f} s per audio minute")
    print("  held-out random combinations (not the test calls): count right, mean right share, "
          "calls with both targets")  # fmt: skip
    for group, cs in held.items():
        for name, mod in versions.items():
            rows = [(*run(mod, c), len(c.speakers)) for c in cs]
            ok = np.array([r[0] == r[4] for r in rows])
            right = np.array([r[1]["right"] for r in rows])
            print(f"  {group:<12} {name:>8}: {len(cs)} calls, count right {ok.mean():.0%}, "
                  f"right share {right.mean():.0%} (min {right.min():.0%}), both targets "
                  f"{(ok & (right >= 0.85)).mean():.0%}")  # fmt: skip


def spherical_kmeans(x: np.ndarray, w: np.ndarray, k: int, restarts: int = 20) -> np.ndarray:
    """Duration-weighted k-means on the unit sphere, k-means++ starts, the best of `restarts`
    (deterministic): labels 0..k-1."""
    rng = np.random.default_rng(0)
    best, best_obj = np.zeros(len(x), np.int64), -np.inf
    for _ in range(restarts):
        picks = [int(rng.choice(len(x), p=w / w.sum()))]
        for _ in range(1, k):
            d = w * np.min(1 - x @ x[picks].T, axis=1).clip(0) ** 2
            picks.append(int(rng.choice(len(x), p=d / d.sum())) if d.sum() > 0 else 0)
        cent = x[picks]
        labels = np.argmax(x @ cent.T, axis=1)
        for _ in range(50):
            cent = np.stack([(x[labels == j] * w[labels == j, None]).sum(0) for j in range(k)])
            cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-9)
            new = np.argmax(x @ cent.T, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
        obj = float((w * np.sum(x * cent[labels], axis=1)).sum())
        if obj > best_obj:
            best, best_obj = labels, obj
    return np.unique(best, return_inverse=True)[1].astype(np.int64)


def why_short(cfg: Config, pitch: bool) -> None:
    """1c: why the EmoDB calls fall short, in numbers. Per call (test calls and held-out folds),
    with the current diarizer's turn prints: the share on the right speaker with the true count
    (spherical k-means, 20 starts) and with the true speakers' centroids; whether the true
    partition fits the prints better than k-means' (duration-weighted cosine to the centroid:
    if it never does, no clustering or count rule on these prints can find the speakers). With
    `pitch`: each turn's median f0 (CREPE), the f0 spread of one speaker's turns, and the right
    share with the true count once the prints' f0-dependent part is removed, with the slope
    fitted on the true speakers (a bound) or learned on fold A's speakers (applied elsewhere)."""
    from stream.voice import diarize as D
    from stream.voice.pitch import CrepePitch
    from stream.voice.vad import SileroVad

    print("\n1c. why the EmoDB calls fall short (true count given; turn prints of the diarizer)")
    st = Stages(cfg)
    vad_session = st.factory.get("silero_vad_v6")
    crepe = st.factory.get("crepe_tiny_pitch") if pitch else None
    embedder = st.speaker_embedder
    assert embedder is not None, "diarization.enabled is false in the config"
    calls, held = test_and_held_out_calls()
    groups = {"test": calls, "fold A": held["fold A"], "fold B": held["fold B"]}
    rows: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    for group, cs in groups.items():
        for call in cs:
            vad = SileroVad(vad_session)
            d = D.Diarizer(embedder)
            for i in range(0, len(call.audio), 1600):
                d.add(call.audio[i : i + 1600], vad.process(call.audio[i : i + 1600]))
            d.flush()
            x = np.stack([w.emb for w in d.windows])
            w = np.array([w.weight for w in d.windows], np.float32)
            who = []  # the reference speaker most of each print's span
            for p in d.windows:
                ov = {s: 0.0 for s in call.speakers}
                for a, b, s in call.turns:
                    ov[s] += max(0.0, min(b, p.end) - max(a, p.start))
                who.append(max(ov, key=lambda s: ov[s]))
            names = sorted(set(who))
            truth = np.array([names.index(s) for s in who], np.int64)
            f0 = np.full(len(x), np.nan)
            if crepe is not None:
                for j, p in enumerate(d.windows):
                    seg = call.audio[int(p.start * 16000) : int(p.end * 16000)]
                    _, hz, conf = CrepePitch(crepe, 0.02).process(seg)
                    if (conf >= 0.5).sum() >= 5:
                        f0[j] = np.median(12 * np.log2(hz[conf >= 0.5] / 100))
                f0[np.isnan(f0)] = np.nanmedian(f0)
            rows[group].append(dict(
                call=call, d=d, x=x, w=w, truth=truth, who=who, f0=f0, k=len(names),
            ))  # fmt: skip

    def right(r: dict[str, Any], x: np.ndarray, labels: np.ndarray) -> float:
        spans = [(p.start, p.end) for p in r["d"].windows]
        segs = D.resegment(spans, x, labels, r["d"].regions, 0.5, 0.3)
        hyp = [(s.start, s.end, str(s.speaker)) for s in segs]
        return float(D.diarization_error(r["call"].turns, hyp)["right"])

    def objective(x: np.ndarray, w: np.ndarray, labels: np.ndarray) -> float:
        c = D.centroids(x, labels, w)
        return float((w * np.sum(x * c[labels], axis=1)).sum())

    def unit(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        return out

    def slope(r: dict[str, Any]) -> np.ndarray:
        """Least-squares change of the print per semitone of f0, within the true speakers."""
        x, w, t, f = r["x"], r["w"], r["truth"], r["f0"]
        fc, xc = f.copy(), x.copy()
        for j in range(r["k"]):
            m = t == j
            fc[m] -= np.average(f[m], weights=w[m])
            xc[m] -= np.average(x[m], axis=0, weights=w[m])
        out: np.ndarray = (w * fc) @ xc / max(float((w * fc * fc).sum()), 1e-9)
        return out

    def without(r: dict[str, Any], b: np.ndarray) -> np.ndarray:
        f = r["f0"] - np.average(r["f0"], weights=r["w"])
        return unit(r["x"] - np.outer(f, b))

    learned = np.mean([slope(r) for r in rows["fold A"]], axis=0) if pitch else None
    print(f"  {'group':<7} {'calls':>5} {'true count, k-means':>19} {'true centroids':>14} "
          f"{'truth fits better':>17}" + (f" {'f0 out (bound)':>14} {'f0 out (fold A)':>15}"
          if pitch else ""))  # fmt: skip
    for group, rs in rows.items():
        rs = [r for r in rs if r["k"] > 1]
        km = [right(r, r["x"], spherical_kmeans(r["x"], r["w"], r["k"])) for r in rs]
        cents = [
            right(r, r["x"], np.argmax(r["x"] @ D.centroids(r["x"], r["truth"], r["w"]).T, 1))
            for r in rs
        ]
        better = sum(
            objective(r["x"], r["w"], r["truth"])
            > objective(r["x"], r["w"], spherical_kmeans(r["x"], r["w"], r["k"]))
            for r in rs
        )
        line = (f"  {group:<7} {len(rs):>5} {np.mean(km):>19.1%} {np.mean(cents):>14.1%} "
                f"{better:>10} of {len(rs):<3}")  # fmt: skip
        if learned is not None:
            bound = [right(r, x := without(r, slope(r)), spherical_kmeans(x, r["w"], r["k"]))
                     for r in rs]  # fmt: skip
            fa = [right(r, x := without(r, learned), spherical_kmeans(x, r["w"], r["k"]))
                  for r in rs]  # fmt: skip
            line += f" {np.mean(bound):>14.1%} {np.mean(fa):>15.1%}"
            if group == "fold A":
                line += " (in-sample)"
        print(line)
    if learned is not None:
        print(
            "  the whole diarizer (count estimated), turn prints as they are -> with the f0 part "
            "(fold A's slope) removed: count right, mean share on the right speaker"
        )
        for group, rs in rows.items():
            out = []
            for x_of in (lambda r: r["x"], lambda r: without(r, learned)):
                ok, share = [], []
                for r in rs:
                    x = x_of(r)
                    labels, _ = D.estimate_speakers(x, D.DiarizationParams(), r["w"])
                    spans = [(p.start, p.end) for p in r["d"].windows]
                    segs = D.resegment(spans, x, labels, r["d"].regions, 0.5, 0.3)
                    hyp = [(s.start, s.end, str(s.speaker)) for s in segs]
                    ok.append(len({h[2] for h in hyp}) == len(r["call"].speakers))
                    share.append(D.diarization_error(r["call"].turns, hyp)["right"])
                out.append(f"{np.mean(ok):.0%} {np.mean(share):.1%}")
            print(f"  {group:<7} {len(rs):>5} calls: {out[0]} -> {out[1]}")
    if pitch:
        per: dict[str, list[float]] = {}
        for rs in rows.values():
            for r in rs:
                for s, f in zip(r["who"], r["f0"], strict=True):
                    per.setdefault(s, []).append(float(f))
        print("  median f0 of a speaker's turns, semitones above 100 Hz: median (std)")
        print("  " + ", ".join(f"{s} {np.median(v):.1f} ({np.std(v):.1f})"
                               for s, v in sorted(per.items())))  # fmt: skip


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
    p.add_argument("--calls-only", action="store_true", help="only the composed calls (1b)")
    p.add_argument("--before", help="git revision whose diarizer runs beside (1b)")
    p.add_argument("--why", action="store_true", help="only 1c: why the EmoDB calls fall short")
    p.add_argument("--pitch", action="store_true", help="1c with f0 per turn (CREPE, slower)")
    args = p.parse_args(argv)
    models = os.environ.get(ENV_MODELS) or str(SHARED / "models")
    cfg = load_config().replace("models", dir=models)
    from tests.compose_voices import compose

    if args.why:
        why_short(cfg, args.pitch)
        return 0
    if args.calls_only:
        composed_calls(cfg, args.before)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-speakers-"))
    call = work / "call_3_speakers_2min.wav"
    audio, _ = compose(["libri0", "libri1", "libri2"], 24, seed=3)
    write_wav(audio[: 120 * 16_000], call)
    diarization(cfg, [SHARED / "media" / "audio" / "pyannote_sample.wav", call])
    composed_calls(cfg, args.before)
    if not args.voice_only:
        facial_actions(cfg, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
