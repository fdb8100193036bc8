"""Recordings composed from real single-speaker clips with known turns (for diarization tests)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .conftest import MEDIA

AUDIO = MEDIA / "audio"
RATE = 16_000
LIBRI = (
    "librosa_libri_198-209-0000.wav",
    "librosa_libri_3436-172162-0000.wav",
    "librosa_libri_5703-47212-0000.wav",
)
F32 = npt.NDArray[np.float32]


def load16k(path: Path) -> F32:
    """Any audio file as 16 kHz mono float32."""
    r = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            frame.pts = None
            out += [f.to_ndarray().reshape(-1) for f in r.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in r.resample(None)]
    return np.concatenate(out).astype(np.float32)


def _level(x: F32, rms: float = 0.05) -> F32:
    return (x * np.float32(rms / max(float(np.sqrt(np.mean(x**2))), 1e-6))).astype(np.float32)


def speaker_chunks(speaker: str, turn_s: float = 3.5) -> list[F32]:
    """A speaker's speech cut into turns: a LibriSpeech reader ("libri0".."libri2") in chunks
    of `turn_s`, or an EmoDB speaker ("emodb03", ...) as pairs of neutral/other utterances."""
    if speaker.startswith("libri"):
        x = load16k(AUDIO / LIBRI[int(speaker[5:])])
        n = int(turn_s * RATE)
        return [_level(x[i : i + n]) for i in range(0, len(x) - n // 2, n)]
    files = sorted(AUDIO.glob(f"emodb_{speaker[5:]}*.wav"))
    utts = [load16k(f) for f in files]
    return [_level(np.concatenate(utts[i : i + 2])) for i in range(0, len(utts) - 1, 2)]


def compose(
    speakers: list[str], turns: int, pause_s: float = 0.4, seed: int = 0
) -> tuple[F32, list[tuple[float, float, str]]]:
    """A conversation: `turns` turns cycling through the speakers in a shuffled order (never
    the same speaker twice in a row), `pause_s` of silence between them; returns the audio and
    the reference turns (start, end, speaker)."""
    rng = np.random.default_rng(seed)
    pools = {s: speaker_chunks(s) for s in speakers}
    used = dict.fromkeys(speakers, 0)
    parts: list[F32] = []
    ref = []
    t = 0.5
    parts.append(np.zeros(int(0.5 * RATE), np.float32))
    last = ""
    for _ in range(turns):
        choices = [
            s for s in speakers if (s != last or len(speakers) == 1) and used[s] < len(pools[s])
        ]
        if not choices:
            break
        least = min(used[s] for s in choices)
        who = str(rng.choice([s for s in choices if used[s] == least]))
        chunk = pools[who][used[who]]
        used[who] += 1
        parts += [chunk, np.zeros(int(pause_s * RATE), np.float32)]
        ref.append((round(t, 3), round(t + len(chunk) / RATE, 3), who))
        t += len(chunk) / RATE + pause_s
        last = who
    audio = np.concatenate(parts)
    audio += rng.normal(0, 1e-4, len(audio)).astype(np.float32)  # a quiet room, not digital zero
    return audio, ref
