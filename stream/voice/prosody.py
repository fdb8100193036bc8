"""Prosody over rolling windows: pitch, energy, speaking-rate and pause proxies, voice activity.

Every feature is also given as a z-score against the speaker's own running baseline. The
"vocal arousal" value is a heuristic (the mean of the energy, pitch, pitch-variability and rate
z-scores), not a trained emotion model: no emotion label is derived from audio. The "estimated
vocal activation" of a window blends the calibrated absolute model (activation_model.py) with
that heuristic once the speaker's baseline has formed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.voice.activation_model import MIN_TURN_S, absolute_logit

#: Human voice range accepted for f0 (Hz); outside it a frame counts as unvoiced.
F0_MIN, F0_MAX = 50.0, 1000.0
#: Baseline windows (a hop each) after which baseline and absolute model weigh the same.
BASELINE_FULL = 120
FEATURES = ("f0_median_hz", "f0_range_st", "f0_var_st", "energy_dbfs", "rate_per_s")


@dataclass(frozen=True)
class HopFeatures:
    """Measurements of one short hop of audio."""

    t: float
    energy_dbfs: float
    f0_hz: float  # pitch and its confidence: estimated in speech only (0 outside it)
    confidence: float
    speech: bool
    speech_prob: float
    tilt_db: float = 0.0  # spectral balance: 1-5 kHz over 50 Hz-1 kHz energy, dB


@dataclass(frozen=True)
class ProsodyReport:
    """Prosody of one speaker over the window ending at `t`."""

    t: float
    window_s: float
    speech_ratio: float
    speaking: bool
    f0_median_hz: float | None
    f0_range_st: float | None
    f0_var_st: float | None
    voicing: float | None
    energy_dbfs: float
    rate_per_s: float | None
    pause_ratio: float
    pauses: int
    mean_pause_s: float | None
    z: dict[str, float | None] = field(default_factory=dict)
    vocal_arousal_heuristic: float | None = None
    #: spectral balance of the speech (median alpha ratio, dB) and the energy range of its
    #: speech (90th - 10th percentile, dB): level-independent activation cues
    tilt_db: float | None = None
    energy_range_db: float | None = None
    #: estimated vocal activation of the window's speech, -1..1 (None: under 0.8 s of speech)
    activation: float | None = None

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 3) -> float | None:
            return None if x is None else round(float(x), n)

        return {
            "t": r(self.t),
            "window_s": self.window_s,
            "speaking": self.speaking,
            "voice_activity_ratio": r(self.speech_ratio),
            "pitch": {
                "median_hz": r(self.f0_median_hz, 1),
                "range_st": r(self.f0_range_st, 2),
                "variability_st": r(self.f0_var_st, 2),
                "voicing_confidence": r(self.voicing),
            },
            "energy_dbfs": r(self.energy_dbfs, 1),
            "speaking_rate_per_s": r(self.rate_per_s, 2),
            "pause_ratio": r(self.pause_ratio),
            "pauses": self.pauses,
            "mean_pause_s": r(self.mean_pause_s),
            "z": {k: r(v, 2) for k, v in self.z.items()},
            "vocal_arousal_heuristic": r(self.vocal_arousal_heuristic, 2),
            "spectral_balance_db": r(self.tilt_db, 1),
            "energy_range_db": r(self.energy_range_db, 1),
            "estimated_vocal_activation": r(self.activation, 3),
        }


class _Welford:
    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    def z(self, x: float | None, min_n: int) -> float | None:
        if x is None or self.n < min_n:
            return None
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return float(np.clip((x - self.mean) / sd, -5, 5)) if sd > 1e-6 else 0.0


def _syllable_peaks(energy_db: np.ndarray, speech: np.ndarray, hop_s: float) -> int:
    """Energy peaks (syllable-nucleus proxy): local maxima 4 dB above the dips around them."""
    if len(energy_db) < 3:
        return 0
    e = np.convolve(energy_db, np.ones(3) / 3, mode="same")
    min_gap = max(1, round(0.1 / hop_s))
    peaks, last = 0, -min_gap
    for i in range(1, len(e) - 1):
        if not speech[i] or e[i] < e[i - 1] or e[i] < e[i + 1] or i - last < min_gap:
            continue
        lo = max(0, i - round(0.15 / hop_s))
        hi = min(len(e), i + round(0.15 / hop_s) + 1)
        if e[i] - min(e[lo:i].min(), e[i + 1 : hi].min()) >= 4.0:
            peaks += 1
            last = i
    return peaks


class ProsodyWindow:
    """Keeps the last `window_s` of hop features of one speaker and reports every `hop_s`.

    Args:
        window_s: length of the analysis window.
        hop_s: time between reports.
        baseline_min: windows with speech needed before z-scores are given.
    """

    def __init__(self, window_s: float = 2.0, hop_s: float = 0.25, baseline_min: int = 8) -> None:
        self.window_s = window_s
        self.hop_s = hop_s
        self.baseline_min = baseline_min
        self._hops: deque[HopFeatures] = deque()
        self._next_report: float | None = None
        self._baseline = {k: _Welford() for k in FEATURES}

    def add(self, hops: list[HopFeatures]) -> list[ProsodyReport]:
        """Add hop features (time-ordered); returns the reports that became due."""
        reports = []
        for h in hops:
            self._hops.append(h)
            while self._hops and h.t - self._hops[0].t > self.window_s:
                self._hops.popleft()
            if self._next_report is None:
                self._next_report = h.t + self.hop_s
            if h.t >= self._next_report:
                self._next_report += self.hop_s * max(
                    1, math.floor((h.t - self._next_report) / self.hop_s) + 1
                )
                reports.append(self._report(h.t))
        return reports

    def _report(self, t: float) -> ProsodyReport:
        hops = list(self._hops)
        speech = np.array([h.speech for h in hops])
        energy = np.array([h.energy_dbfs for h in hops], np.float64)
        f0 = np.array([h.f0_hz for h in hops], np.float64)
        conf = np.array([h.confidence for h in hops], np.float64)
        hop_s = (hops[-1].t - hops[0].t) / max(len(hops) - 1, 1) if len(hops) > 1 else 0.02
        speech_ratio = float(speech.mean()) if len(hops) else 0.0
        voiced = speech & (conf >= 0.5) & (f0 >= F0_MIN) & (f0 <= F0_MAX)
        f0_med = f0_range = f0_var = voicing = rate = tilt = e_range = None
        if voiced.sum() >= 5:
            v = f0[voiced]
            f0_med = float(np.median(v))
            st = 12.0 * np.log2(v / f0_med)
            f0_range = float(np.percentile(st, 90) - np.percentile(st, 10))
            f0_var = float(st.std())
        if speech.any():
            voicing = float(conf[speech].mean())
            lin = 10 ** (energy[speech] / 10.0)
            energy_db = float(10 * np.log10(max(lin.mean(), 1e-12)))
            speech_s = speech.sum() * hop_s
            if speech_s >= 0.3:
                rate = _syllable_peaks(energy, speech, hop_s) / speech_s
                e = energy[speech]
                e_range = float(np.percentile(e, 90) - np.percentile(e, 10))
                # Spectral balance of the louder half of the speech (the vowels, not the hiss
                # of pauses between words).
                tilts = np.array([h.tilt_db for h in hops], np.float64)[speech]
                tilt = float(np.median(tilts[e >= np.median(e)]))
        else:
            energy_db = float(10 * np.log10(max(float((10 ** (energy / 10.0)).mean()), 1e-12)))
        # Pauses: silent runs between speech inside the window.
        runs, cur = [], 0
        started = False
        for s in speech:
            if s:
                if started and cur:
                    runs.append(cur * hop_s)
                started, cur = True, 0
            elif started:
                cur += 1
        values = {
            "f0_median_hz": f0_med,
            "f0_range_st": f0_range,
            "f0_var_st": f0_var,
            "energy_dbfs": energy_db if speech.any() else None,
            "rate_per_s": rate,
        }
        z = {k: self._baseline[k].z(x, self.baseline_min) for k, x in values.items()}
        if speech_ratio >= 0.3:
            for k, x in values.items():
                if x is not None:
                    self._baseline[k].add(x)
        parts = [z[k] for k in ("energy_dbfs", "f0_median_hz", "f0_var_st", "rate_per_s")]
        known = [p for p in parts if p is not None]
        arousal = float(np.mean(known)) if known and speech_ratio >= 0.3 else None
        activation = None
        if speech.sum() * hop_s >= MIN_TURN_S:
            cues = {"f0_range_st": f0_range, "f0_var_st": f0_var, "tilt_db": tilt}
            logit = absolute_logit({**cues, "energy_range_db": e_range, "rate_per_s": rate})
            if logit is not None:
                if arousal is not None:  # the speaker's baseline weighs in as it forms
                    w = 0.5 * min(1.0, self._baseline["energy_dbfs"].n / BASELINE_FULL)
                    logit = (1 - w) * logit + w * 1.5 * arousal
                activation = float(2 / (1 + math.exp(-logit)) - 1)
        return ProsodyReport(
            t=t,
            window_s=self.window_s,
            speech_ratio=speech_ratio,
            speaking=bool(speech[-min(len(speech), 8) :].any()) if len(speech) else False,
            f0_median_hz=f0_med,
            f0_range_st=f0_range,
            f0_var_st=f0_var,
            voicing=voicing,
            energy_dbfs=energy_db,
            rate_per_s=rate,
            pause_ratio=1.0 - speech_ratio,
            pauses=len(runs),
            mean_pause_s=float(np.mean(runs)) if runs else None,
            z=z,
            vocal_arousal_heuristic=arousal,
            tilt_db=tilt,
            energy_range_db=e_range,
            activation=activation,
        )
