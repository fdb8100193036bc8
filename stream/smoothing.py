"""Temporal smoothing of expression probabilities, with hysteresis and an "uncertain" state."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.config import SmoothingConfig
from stream.labels import LABELS, UNCERTAIN
from stream.types import F32


@dataclass(frozen=True)
class Smoothed:
    """Smoothed state of one face after an update."""

    probs: F32  # [8] canonical order
    valence_arousal: F32  # [2]
    label: str  # canonical label or "uncertain"
    confidence: float  # smoothed probability of the shown label (of the top label if uncertain)


@dataclass
class _State:
    t: float
    vec: F32  # 8 probabilities + valence + arousal
    label: str


class ExpressionSmoother:
    """Exponential smoothing with a time constant, so results do not depend on the frame rate.

    After a gap of `dt` seconds the new observation gets weight 1 - exp(-dt / tau). A face unseen
    for longer than `reset_after_s` starts afresh. The shown label changes only when another
    label leads it by `hysteresis`; below `uncertain_below` the label is "uncertain".
    """

    def __init__(self, config: SmoothingConfig) -> None:
        self.config = config
        self._states: dict[int, _State] = {}

    def reset(self, key: int | None = None) -> None:
        """Forget one face's state, or every face's."""
        if key is None:
            self._states.clear()
        else:
            self._states.pop(key, None)

    def update(self, key: int, t: float, probs: F32, valence_arousal: F32) -> Smoothed:
        """Fold one observation of face `key` at media time `t` into its state."""
        c = self.config
        obs = np.concatenate([probs, valence_arousal]).astype(np.float32)
        st = self._states.get(key)
        if st is None or t - st.t > c.reset_after_s or t < st.t:
            st = _State(t, obs, UNCERTAIN)
            self._states[key] = st
        else:
            dt = t - st.t
            alpha = 1.0 if c.tau_s == 0 else 1.0 - math.exp(-dt / c.tau_s)
            st.vec = (st.vec + np.float32(alpha) * (obs - st.vec)).astype(np.float32)
            st.t = t
        p = st.vec[:8]
        top = int(np.argmax(p))
        if p[top] < c.uncertain_below:
            st.label = UNCERTAIN
        elif st.label == UNCERTAIN:
            st.label = LABELS[top]
        else:
            cur = LABELS.index(st.label)
            if top != cur and p[top] - p[cur] >= c.hysteresis:
                st.label = LABELS[top]
        conf = float(p[top] if st.label == UNCERTAIN else p[LABELS.index(st.label)])
        return Smoothed(p.copy(), st.vec[8:].copy(), st.label, conf)
