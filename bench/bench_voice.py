"""Voice benchmark: CPU cost of one speaker's audio chain (denoise + VAD + pitch + matching).

Feeds real speech as live WebRTC audio would arrive (48 kHz stereo s16 frames of 20 ms) and
reports the real-time factor as a share of one core (thread CPU time per second of audio),
per stage and in total. Target on this 2-core CPU: at most 0.25 of one core per stream.

Run: EMOTION_STREAM_MODELS=../shared/models python bench/bench_voice.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from stream.analysis.speaker import SpeakerMatcher
from stream.core.config import AudioConfig, load_config
from stream.models.runtime import make_factory
from stream.vision.mouth import MouthSample
from stream.voice.analyzer import VoiceAnalyzer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
CLIPS = [
    "librosa_libri_198-209-0000.wav",
    "librosa_libri_3436-172162-0000.wav",
    "librosa_libri_5703-47212-0000.wav",
]
TARGET = 0.25


def speech(seconds: float) -> npt.NDArray[np.float32]:
    """Real read speech, 48 kHz mono, looped to `seconds`."""
    out = []
    for name in CLIPS:
        r = av.AudioResampler(format="flt", layout="mono", rate=48_000)
        with av.open(str(SHARED / "media/audio" / name)) as c:
            for f in c.decode(audio=0):
                out += [x.to_ndarray().reshape(-1) for x in r.resample(f)]
    audio = np.concatenate(out).astype(np.float32)
    reps = int(np.ceil(seconds * 48_000 / len(audio)))
    return np.tile(audio, reps)[: int(seconds * 48_000)]


def live_frames(audio: npt.NDArray[np.float32]) -> list[av.AudioFrame]:
    """20 ms stereo s16 frames, as aiortc decodes Opus."""
    s16 = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
    frames = []
    for i in range(0, len(s16) - 959, 960):
        f = av.AudioFrame.from_ndarray(np.repeat(s16[i : i + 960], 2)[None, :], "s16", "stereo")
        f.sample_rate = 48_000
        frames.append(f)
    return frames


def measure(config: AudioConfig, frames: list[av.AudioFrame], seconds: float) -> dict[str, float]:
    """Process CPU seconds (all threads) per second of audio for the chain, and for matching.

    Frames are fed in batches of five (100 ms), as the live server does.
    """
    factory = make_factory(load_config())
    analyzer = VoiceAnalyzer(factory, config)
    matcher = SpeakerMatcher(config.match_window_s, config.match_threshold)
    rng = np.random.default_rng(0)
    t_chain = t_match = 0.0
    next_mouth = 0.0
    for i in range(0, len(frames), 5):
        c0 = time.process_time()
        update = analyzer.feed_many(list(frames[i : i + 5]))
        c1 = time.process_time()
        for h in update.hops:
            matcher.add_voice(h.t, h.energy_dbfs)
            while next_mouth <= h.t:  # two faces' mouths at 25 fps
                for face in (1, 2):
                    matcher.add_mouth(next_mouth, face, MouthSample(0.0, float(rng.normal())))
                next_mouth += 0.04
        for r in update.reports:
            matcher.decide(r.t, r.speaking)
        c2 = time.process_time()
        t_chain += c1 - c0
        t_match += c2 - c1
    return {"chain": t_chain / seconds, "match": t_match / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per measurement")
    args = parser.parse_args()
    audio = speech(args.seconds)
    frames = live_frames(audio)
    print(
        f"voice benchmark: {args.seconds:.0f} s of LibriSpeech as 20 ms stereo frames, "
        "process CPU time (all threads)"
    )
    rows = []
    for label, cfg in (
        ("default (denoise, pitch 40 ms)", AudioConfig()),
        ("without denoising", AudioConfig(denoise=False)),
        ("pitch every 20 ms", AudioConfig(pitch_hop_s=0.02)),
    ):
        m = measure(cfg, frames, args.seconds)
        total = m["chain"] + m["match"]
        rows.append((label, m["chain"], m["match"], total))
    print(
        f"  {'configuration':<31} {'chain':>8} {'matching':>9} {'total':>8}   (share of one core)"
    )
    for label, chain, match, total in rows:
        print(f"  {label:<31} {chain:8.3f} {match:9.3f} {total:8.3f}")
    full = rows[0][3]
    denoise = rows[0][1] - rows[1][1]
    print(f"  DeepFilterNet3 alone: {denoise:.3f} of a core ({denoise / full:.0%} of the chain)")
    status = "PASS" if full <= TARGET else "MISS"
    print(
        f"Summary: {full:.3f} of one core per stream (target <= {TARGET}) ratio "
        f"{TARGET / full:.2f} {status}"
    )


if __name__ == "__main__":
    main()
