"""Automatic gain before the denoiser: quiet recordings reach the models at a working level.

DeepFilterNet3 treats quiet speech as noise: measured on a LibriSpeech clip scaled to a peak of
-30 dBFS (laptop-microphone level), its output was 70 dB below its input and Silero VAD found no
speech, while the same clip at -20 dBFS peak kept all 12.6 s. Silero VAD itself is nearly
level-independent (11.9 s of 12.6 s at -45 dBFS peak on the raw audio). So the gain goes in front
of the denoiser, and the analyser subtracts it again from the energies it reports (`gain_db_at`),
keeping `energy_dbfs` the level of the recording as it is.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stream.core.types import F32


class LevelNormaliser:
    """Streaming gain: raises loud frames of the recent past to `target_db`, never lowers.

    The reference level follows the loudest 10 ms frame RMS: it rises at once (a loud onset
    is never over-amplified) and falls by `release_db_per_s`, so the gain does not pump between
    words. The gain is at most `max_gain_db`; frames quieter than `floor_db` (digital silence,
    dither) never raise it, so silence is not amplified to noise.

    Args:
        rate: sample rate of the audio fed.
        target_db: the level (dBFS RMS of the loudest 10 ms frames) speech is brought to.
        max_gain_db: the most gain applied.
        release_db_per_s: how fast the reference level decays after a loud passage.
        floor_db: frames below this RMS do not count as signal.
    """

    def __init__(
        self,
        rate: int,
        target_db: float = -18.0,
        max_gain_db: float = 36.0,
        release_db_per_s: float = 2.0,
        floor_db: float = -80.0,
    ) -> None:
        if not 0 <= max_gain_db <= 60:
            raise ValueError("max_gain_db must be in [0, 60]")
        if release_db_per_s <= 0:
            raise ValueError("release_db_per_s must be > 0")
        self.rate = rate
        self.frame = rate // 100
        self.target_db, self.max_gain_db = target_db, max_gain_db
        self.release = release_db_per_s / 100  # per 10 ms frame
        self.floor_db = floor_db
        self.ref_db = target_db - max_gain_db  # no signal yet: full gain available
        self._gain = 1.0  # linear gain at the end of the last frame
        self._pending = np.zeros(0, np.float32)
        self._t = 0.0  # stream time of the next frame
        self._history: deque[tuple[float, float]] = deque(maxlen=3000)  # (t, gain dB), 30 s

    @property
    def gain_db(self) -> float:
        return float(20 * np.log10(self._gain))

    def process(self, samples: F32) -> F32:
        """Scale a chunk; returns the samples of every completed 10 ms frame (the rest waits)."""
        out, gains = self.scale(samples)
        self.record(gains)
        return out

    def scale(self, samples: F32) -> tuple[F32, list[tuple[float, float]]]:
        """`process` without keeping the gains: the scaled samples and each completed frame's
        (stream time, gain dB), for `record` (possibly on another thread, in order)."""
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = len(buf) // self.frame
        self._pending = buf[n * self.frame :].copy()
        if n == 0:
            return np.zeros(0, np.float32), []
        frames = buf[: n * self.frame].reshape(n, self.frame).astype(np.float64)
        rms_db = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-12))
        gains = np.empty(n + 1)
        gains[0] = self._gain
        history: list[tuple[float, float]] = []
        for i, level in enumerate(rms_db):
            self.ref_db -= self.release
            if level > self.floor_db:
                self.ref_db = max(self.ref_db, float(level))
            self.ref_db = max(self.ref_db, self.target_db - self.max_gain_db)
            g_db = float(np.clip(self.target_db - self.ref_db, 0.0, self.max_gain_db))
            gains[i + 1] = 10 ** (g_db / 20)
            history.append((self._t, g_db))
            self._t += 0.01
        self._gain = float(gains[-1])
        # Within a frame the gain moves linearly from the previous frame's to this one's.
        ramp = np.linspace(0.0, 1.0, self.frame, endpoint=False)[None, :]
        g = gains[:-1, None] + (gains[1:, None] - gains[:-1, None]) * ramp
        out: F32 = (frames * g).reshape(-1).astype(np.float32)
        return out, history

    def record(self, gains: list[tuple[float, float]]) -> None:
        """Keep frames' (time, gain dB) from `scale` for `gain_db_at`."""
        self._history.extend(gains)

    def gain_db_at(self, t: float) -> float:
        """The gain (dB) applied to the audio at stream time `t` (the latest 30 s are kept)."""
        if not self._history:
            return 0.0
        t0 = self._history[0][0]
        i = round((t - t0) / 0.01)
        i = min(max(i, 0), len(self._history) - 1)
        return self._history[i][1]


class Retention:
    """How much of the sound the denoiser kept, over the last `window_s`: foreground speech
    keeps most of its energy, background babble does not.

    Measured (10 ms frames, 0.1 s windows): clean speech kept -0.1 dB (median), speech in
    6-talker babble at SNR 5 dB -5.8 dB, babble alone -15.7 dB (6 talkers) and -22.6 dB (24).
    Silero VAD alone calls babble speech (10.8 s of 14 s of 24-talker babble), denoised or not.

    Args:
        frame: samples per denoiser frame.
        delay_frames: the denoiser's delay in frames (output frame k is input frame k - delay).
        window_s: the trailing window the energies are summed over.
    """

    def __init__(self, frame: int, delay_frames: int = 3, window_s: float = 0.3) -> None:
        self.frame = frame
        self.delay = delay_frames
        self.n = max(1, round(window_s / 0.01))
        self._in: deque[float] = deque(maxlen=self.n + delay_frames + 1)
        self._out: deque[float] = deque(maxlen=self.n)
        self._kept: deque[float] = deque(maxlen=6000)  # retention (dB) per output frame, 60 s
        self._t0 = 0.0  # output time of self._kept[0]

    def add(self, before: F32, after: F32) -> None:
        """Feed the denoiser's input and output (equal lengths of whole frames)."""
        n = min(len(before), len(after)) // self.frame
        if n == 0:
            return
        e_in = (before[: n * self.frame].astype(np.float64).reshape(n, -1) ** 2).sum(axis=1)
        e_out = (after[: n * self.frame].astype(np.float64).reshape(n, -1) ** 2).sum(axis=1)
        for a, b in zip(e_in.tolist(), e_out.tolist(), strict=True):
            self._in.append(a)
            self._out.append(b)
            ins = list(self._in)[: len(self._in) - self.delay][-len(self._out) :]
            if not ins:  # the first frames are the denoiser's delay: nothing to compare yet
                kept = 0.0
            else:
                e_o, e_i = sum(self._out) / len(self._out), sum(ins) / len(ins)
                kept = 10 * np.log10(max(e_o, 1e-12) / max(e_i, 1e-12))
            if len(self._kept) == self._kept.maxlen:
                self._t0 += 0.01
            self._kept.append(float(kept))

    def at(self, t: float) -> float:
        """Retention (dB) over the window ending at output time `t` (0 before any audio)."""
        if not self._kept:
            return 0.0
        i = min(max(round((t - self._t0) / 0.01) - 1, 0), len(self._kept) - 1)
        return self._kept[i]
