"""Temporal smoothing of expression probabilities, with hysteresis and an "uncertain" state."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.core.config import SmoothingConfig
from stream.core.labels import LABELS, UNCERTAIN
from stream.core.types import F32


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
    prev_obs: F32


class ExpressionSmoother:
    """Exponential smoothing with a time constant, so results do not depend on the frame rate.

    The state relaxes towards the observations with time constant `tau_s` (seconds), each
    observation held from the midpoint of the gap before it, so the response depends on media
    time, not on how many frames were analysed. A face unseen
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
            st = _State(t, obs, UNCERTAIN, obs)
            self._states[key] = st
        else:
            # The change happened somewhere between the two samples: hold the previous
            # observation for the first half of the gap and the new one for the second half.
            dt = t - st.t
            decay = 0.0 if c.tau_s == 0 else math.exp(-dt / (2 * c.tau_s))
            prev = st.prev_obs
            mid = prev + np.float32(decay) * (st.vec - prev)
            st.vec = (obs + np.float32(decay) * (mid - obs)).astype(np.float32)
            st.t = t
        st.prev_obs = obs
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
