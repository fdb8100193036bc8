"""Estimated vocal activation (arousal) per speech turn: how energised a voice sounds.

Not an emotion: a voice can sound activated in anger, joy or fear alike. Two parts:

* an absolute estimate from level-independent cues of the turn itself (pitch range and
  variability, spectral balance, energy range, speaking rate), a logistic model calibrated on
  acted German speech (EmoDB: anger/happiness/fear against neutral/sadness/boredom), so a turn
  heard once, from a speaker never heard before, still gets a value;
* a relative part once the speaker's own baseline has formed: the same cues plus pitch level and
  loudness as z-scores against the speaker's earlier turns (its register and usual loudness).

The value is in [-1, 1] (the model's probability of "high activation", 2p - 1). Calibration
(speaker-independent, leave one speaker out) is measured by tests/test_activation.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stream.voice.activation_model import CUES, MIN_TURN_S, absolute_logit
from stream.voice.prosody import ProsodyReport

__all__ = ["CUES", "MIN_TURN_S", "SpeakerActivation", "TurnCues", "absolute_logit"]

F64 = npt.NDArray[np.float64]
#: Cues compared with the speaker's own earlier turns (z-scores) once it has a baseline.
RELATIVE = ("f0_median_st", "energy_dbfs", "tilt_db", "f0_range_st", "rate_per_s")
#: The least spread assumed for a baseline cue (a few similar turns are not a sharp baseline).
MIN_SD = {"f0_median_st": 1.0, "energy_dbfs": 2.0, "tilt_db": 2.0, "f0_range_st": 1.0}
MIN_SD_DEFAULT = 0.5


@dataclass(frozen=True)
class TurnCues:
    """A turn's cues: medians over the prosody reports inside it (None: not measured)."""

    start: float
    end: float
    values: dict[str, float | None]

    @staticmethod
    def of(reports: Sequence[ProsodyReport], start: float, end: float) -> TurnCues:
        """Cues of the speaking reports whose time falls in (start, end + 0.25]."""
        inside = [r for r in reports if r.speaking and start < r.t <= end + 0.25]

        def med(xs: list[float | None]) -> float | None:
            v = [x for x in xs if x is not None]
            return float(np.median(v)) if v else None

        f0 = med([r.f0_median_hz for r in inside])
        return TurnCues(
            start,
            end,
            {
                "f0_median_st": 12 * math.log2(f0 / 100.0) if f0 else None,
                "f0_range_st": med([r.f0_range_st for r in inside]),
                "f0_var_st": med([r.f0_var_st for r in inside]),
                "tilt_db": med([r.tilt_db for r in inside]),
                "energy_range_db": med([r.energy_range_db for r in inside]),
                "energy_dbfs": med([r.energy_dbfs for r in inside]),
                "rate_per_s": med([r.rate_per_s for r in inside]),
            },
        )


@dataclass
class SpeakerActivation:
    """One speaker's turns scored in order: absolute estimate blended with its own baseline.

    Args:
        baseline_turns: turns before the baseline counts at all.
        full_weight_s: speech time after which baseline and absolute part weigh the same.
    """

    baseline_turns: int = 3
    full_weight_s: float = 30.0
    _seen: list[dict[str, float | None]] = field(default_factory=list)
    _speech_s: float = 0.0

    def score(self, turn: TurnCues) -> float | None:
        """The turn's estimated activation in [-1, 1] (None: shorter than 0.8 s or no cue)."""
        if turn.end - turn.start < MIN_TURN_S:
            return None
        logit = absolute_logit(turn.values)
        if logit is None:
            return None
        rel = self._relative(turn.values)
        self._seen.append(turn.values)
        self._speech_s += turn.end - turn.start
        if rel is not None:
            w = 0.5 * min(1.0, self._speech_s / self.full_weight_s)
            logit = (1 - w) * logit + w * rel
        return float(2 / (1 + math.exp(-logit)) - 1)

    def _relative(self, cues: dict[str, float | None]) -> float | None:
        if len(self._seen) < self.baseline_turns:
            return None
        zs = []
        for k in RELATIVE:
            x = cues.get(k)
            past = [float(s[k]) for s in self._seen if s.get(k) is not None]  # type: ignore[arg-type]
            if x is None or len(past) < self.baseline_turns:
                continue
            sd = max(float(np.std(past)), MIN_SD.get(k, MIN_SD_DEFAULT))
            zs.append(float(np.clip((x - float(np.mean(past))) / sd, -3, 3)))
        return float(np.mean(zs)) * 1.5 if zs else None


# -- calibration -----------------------------------------------------------------------------
def matrix(turns: Sequence[dict[str, float | None]]) -> F64:
    """[n, len(CUES)] cue values; missing cues take the column's median."""
    x = np.array([[np.nan if t.get(k) is None else t[k] for k in CUES] for t in turns], float)
    med = np.nanmedian(x, axis=0)
    return np.where(np.isnan(x), med[None, :], x)


def fit(x: F64, y: npt.NDArray[np.int64], l2: float = 1.0, iters: int = 200) -> dict[str, float]:
    """L2-regularised logistic regression on standardised cues (Newton's method); returns
    mean_*, sd_*, w_* per cue and the intercept b."""
    mean, sd = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    xs = np.hstack([(x - mean) / sd, np.ones((len(x), 1))])
    w = np.zeros(xs.shape[1])
    reg = np.eye(xs.shape[1]) * l2
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-xs @ w))
        grad = xs.T @ (p - y) + reg @ w
        hess = xs.T @ (xs * (p * (1 - p))[:, None]) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    out = {"b": float(w[-1])}
    for i, k in enumerate(CUES):
        out[f"mean_{k}"], out[f"sd_{k}"], out[f"w_{k}"] = float(mean[i]), float(sd[i]), float(w[i])
    return out


def predict(model: dict[str, float], x: F64) -> F64:
    z = np.full(len(x), model["b"])
    for i, k in enumerate(CUES):
        z += model[f"w_{k}"] * np.clip((x[:, i] - model[f"mean_{k}"]) / model[f"sd_{k}"], -4, 4)
    out: F64 = z
    return out


def auc(scores: F64, labels: npt.NDArray[np.int64]) -> float:
    """Area under the ROC curve (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
