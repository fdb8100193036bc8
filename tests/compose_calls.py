"""Test audio made at test time from the shared clips: levels, telephone band, noisy rooms, and
calls with short turns, same-gender pairs, a one-word speaker and overlap (reference turns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from .compose_voices import AUDIO, RATE, load16k

F32 = npt.NDArray[np.float32]
#: EmoDB speakers by sex (the corpus documentation: 03, 10, 11, 12, 15 male; 08, 09, 13, 14, 16
#: female).
EMODB_MALE = ("03", "10", "11", "12", "15")
EMODB_FEMALE = ("08", "09", "13", "14", "16")
LIBRI = (
    "librosa_libri_198-209-0000.wav",
    "librosa_libri_3436-172162-0000.wav",
    "librosa_libri_5703-47212-0000.wav",
)


def peak_db(x: F32) -> float:
    return float(20 * np.log10(max(float(np.abs(x).max()), 1e-12)))


def at_peak(x: F32, db: float) -> F32:
    """`x` scaled so its peak is `db` dBFS."""
    return (x * np.float32(10 ** ((db - peak_db(x)) / 20))).astype(np.float32)


def rms(x: F32) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def mix_at_snr(speech: F32, noise: F32, snr_db: float) -> F32:
    """Speech plus noise (looped or cut to its length) at `snr_db` (RMS over the whole clip)."""
    n = np.resize(noise, len(speech)).astype(np.float32)
    gain = rms(speech) / max(rms(n), 1e-9) / 10 ** (snr_db / 20)
    return (speech + n * np.float32(gain)).astype(np.float32)


def babble(seconds: float, talkers: int = 6, seed: int = 0) -> F32:
    """Several talkers at once (EmoDB and LibriSpeech clips, random offsets): a busy room."""
    rng = np.random.default_rng(seed)
    files = sorted(AUDIO.glob("emodb_*.wav"))
    n = int(seconds * RATE)
    out = np.zeros(n, np.float32)
    for _ in range(talkers):
        x = np.concatenate([load16k(files[int(i)]) for i in rng.choice(len(files), 12)])
        x = np.resize(np.roll(x, int(rng.integers(len(x)))), n)
        out += x / max(rms(x), 1e-9) * np.float32(0.05)
    return out.astype(np.float32)


def music(seconds: float, seed: int = 0) -> F32:
    """Synthetic music: chords of harmonic tones, a new chord every 0.5 s, with a beat."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    roots = 110 * 2 ** (rng.integers(0, 12, size=int(seconds * 2) + 1) / 12)
    for i, root in enumerate(roots):
        a, b = int(i * 0.5 * RATE), min(n, int((i + 1) * 0.5 * RATE))
        if a >= n:
            break
        seg = t[a:b] - t[a]
        env = np.exp(-3 * seg)
        for ratio in (1.0, 1.26, 1.5, 2.0):
            for h in range(1, 6):
                out[a:b] += env * np.sin(2 * np.pi * root * ratio * h * seg) / h
    beat = (np.mod(t, 0.5) < 0.03) * rng.standard_normal(n) * 0.5
    out += beat
    return (out / max(float(np.abs(out).max()), 1e-9) * 0.3).astype(np.float32)


def telephone(x: F32) -> F32:
    """`x` through an 8 kHz mu-law telephone channel and back to 16 kHz."""
    frames: list[Any] = []
    r8 = av.AudioResampler(format="s16", layout="mono", rate=8000)
    f = av.AudioFrame.from_ndarray(
        (np.clip(x, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
    )
    f.sample_rate = RATE
    frames = [*r8.resample(f), *r8.resample(None)]
    enc = av.CodecContext.create("pcm_mulaw", "w")
    enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"
    dec = av.CodecContext.create("pcm_mulaw", "r")
    dec.sample_rate, dec.layout = 8000, "mono"
    up = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = []
    for fr in frames:
        for p in enc.encode(fr):
            for d in dec.decode(p):
                d.pts = None
                out += [y.to_ndarray().reshape(-1) for y in up.resample(d)]
    out += [y.to_ndarray().reshape(-1) for y in up.resample(None)]
    return np.concatenate(out).astype(np.float32)


# -- calls -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """A composed call: 16 kHz audio and its reference turns (start, end, speaker)."""

    name: str
    audio: F32
    turns: list[tuple[float, float, str]]

    @property
    def speakers(self) -> set[str]:
        return {s for _, _, s in self.turns}


def utterances(speaker: str) -> list[F32]:
    """A speaker's clips at one level: EmoDB "e03" (every utterance), LibriSpeech "l0".."l2"
    (its reading cut at pauses into 1-3 s phrases)."""
    if speaker.startswith("e"):
        clips = [load16k(f) for f in sorted(AUDIO.glob(f"emodb_{speaker[1:]}*.wav"))]
    else:
        clips = _phrases(load16k(AUDIO / LIBRI[int(speaker[1:])]))
    return [
        (c / np.float32(max(rms(c), 1e-9)) * np.float32(0.05)).astype(np.float32) for c in clips
    ]


def _phrases(x: F32, min_s: float = 0.8, max_s: float = 2.5) -> list[F32]:
    """Cut read speech at its quietest 20 ms frames into phrases of min_s..max_s."""
    hop = RATE // 50
    e = np.array([rms(x[i : i + hop]) for i in range(0, len(x) - hop, hop)])
    out, start = [], 0
    while start < len(e):
        lo, hi = start + int(min_s * 50), start + int(max_s * 50)
        if hi >= len(e):
            out.append(x[start * hop :])
            break
        cut = lo + int(np.argmin(e[lo:hi]))
        out.append(x[start * hop : cut * hop])
        start = cut
    return [o for o in out if len(o) > RATE * 0.5]


def trim(x: F32, top_db: float = 35.0) -> F32:
    """Leading and trailing silence removed (20 ms frames quieter than the peak by top_db)."""
    hop = RATE // 50
    e = np.array([rms(x[i : i + hop]) for i in range(0, max(len(x) - hop, 1), hop)])
    loud = np.nonzero(20 * np.log10(np.maximum(e, 1e-9)) > 20 * np.log10(e.max()) - top_db)[0]
    if len(loud) == 0:
        return x
    return x[loud[0] * hop : (loud[-1] + 1) * hop]


def compose_call(
    name: str,
    speakers: list[str],
    turns: int,
    turn_s: tuple[float, float] = (0.8, 2.0),
    pause_s: tuple[float, float] = (0.3, 0.5),
    one_word: str | None = None,
    overlap_s: float = 0.0,
    seed: int = 0,
) -> Call:
    """A call of `turns` short turns cycling the speakers in random order (never the same twice
    in a row). Each turn is a piece of one clip cut to `turn_s` (at a quiet frame when there is
    one); pauses `pause_s`; `one_word` speaks a single ~0.4 s word once, mid-call; with
    `overlap_s`, every third change of speaker starts that much before the previous turn ends."""
    rng = np.random.default_rng(seed)
    pools = {s: [trim(u) for u in utterances(s)] for s in speakers}
    regular = [s for s in speakers if s != one_word]
    pieces: list[tuple[str, F32]] = []
    prev = None
    for _ in range(turns):
        who = str(rng.choice([s for s in regular if s != prev] or regular))
        clip = pools[who][int(rng.integers(len(pools[who])))]
        length = int(rng.uniform(*turn_s) * RATE)
        start = int(rng.integers(0, max(1, len(clip) - length)))
        pieces.append((who, clip[start : start + length]))
        prev = who
    if one_word is not None:
        word = pools[one_word][0][: int(0.45 * RATE)]
        pieces.insert(len(pieces) // 2, (one_word, word))
    total = sum(len(p) for _, p in pieces) + int(pause_s[1] * RATE * len(pieces)) + RATE
    audio = np.zeros(total, np.float32)
    ref: list[tuple[float, float, str]] = []
    pos = int(0.3 * RATE)
    for i, (who, x) in enumerate(pieces):
        a = pos
        if overlap_s > 0 and i > 0 and i % 3 == 0 and pieces[i - 1][0] != who:
            a = int(max(0.0, (ref[-1][1] - overlap_s) * RATE))
        audio[a : a + len(x)] += x
        ref.append((a / RATE, (a + len(x)) / RATE, who))
        pos = a + len(x) + int(rng.uniform(*pause_s) * RATE)
    audio = audio[: pos + int(0.3 * RATE)]
    return Call(name, audio, ref)
