"""Speaker embeddings (GE2E, Resemblyzer): 16 kHz audio in, one 256-d voice print per window.

Preprocessing as upstream (`resemblyzer.audio.wav_to_mel_spectrogram`): quiet audio is raised to
-30 dBFS RMS (never lowered), then a power mel spectrogram (n_fft 400, hop 160, Hann window,
centred frames, 40 Slaney mel bands); the LSTM takes [N, T, 40] and returns L2-normalised [N, 256].
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from stream.core.types import F32

RATE = 16_000
N_FFT = 400
HOP = 160  # 10 ms per mel frame
N_MELS = 40
TARGET_DBFS = -30.0


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log = hz >= min_log_hz
    mel[log] = min_log_mel + np.log(hz[log] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp = 200.0 / 3
    hz = mel * f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log = mel >= min_log_mel
    hz[log] = min_log_hz * np.exp(logstep * (mel[log] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_filters() -> F32:
    """[40, 201] Slaney-normalised triangular filters (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0, RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(
        np.linspace(
            _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([RATE / 2.0]))[0], N_MELS + 2
        )
    )
    fdiff = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    weights = np.zeros((N_MELS, len(fft_freqs)))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS]))[:, None]
    return weights.astype(np.float32)


def normalise_volume(audio: F32) -> F32:
    """Raise quiet audio to -30 dBFS RMS (never lower it), as upstream does."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    if rms <= 1e-8:
        return audio
    gain = 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)
    return (audio * np.float32(gain)).astype(np.float32) if gain > 1 else audio


def mel_spectrogram(audio: F32) -> F32:
    """[T, 40] power mel spectrogram, one frame per 10 ms (frame i centred at i * 10 ms)."""
    pad = N_FFT // 2
    x = np.pad(np.asarray(audio, np.float32), (pad, pad))
    n = 1 + (len(x) - N_FFT) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2
    return (spec.astype(np.float32) @ mel_filters().T).astype(np.float32)


class SpeakerEmbedder:
    """GE2E voice prints of mel windows (stateless; one shared session).

    Args:
        session: ONNX Runtime session of resemblyzer_ge2e_256d.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name

    def embed_mels(self, windows: list[F32]) -> F32:
        """[N, 256] embeddings of mel windows ([T_i, 40] each; equal lengths run as one batch)."""
        out = np.zeros((len(windows), 256), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_len.setdefault(len(w), []).append(i)
        for _, idx in by_len.items():
            batch = np.stack([windows[i] for i in idx]).astype(np.float32)
            (emb,) = self.session.run(None, {self.input: batch})[:1]
            out[idx] = emb
        return out
