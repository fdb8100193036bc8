"""The calibrated activation model: a logistic model over level-independent voice cues (see
activation.py for what it means and how it is used)."""

from __future__ import annotations

import numpy as np

MIN_TURN_S = 0.8  # shortest speech a value is given for
#: Turn cues of the absolute model, in this order.
CUES = ("f0_range_st", "f0_var_st", "tilt_db", "energy_range_db", "rate_per_s")
#: Logistic model over standardised CUES: (mean, sd, weight) per cue, then the intercept.
#: Fitted by `fit` on the 66 EmoDB clips of ../shared/media/audio with a high (anger, happiness,
#: fear) or low (neutral, sadness, boredom) activation label, through the product's voice chain
#: (tests/test_activation.py prints the refit and the leave-one-speaker-out AUCs: mean 0.87).
#: Spectral balance carries most of it (AUC 0.82 alone), then pitch range (0.66) and rate (0.60).
MODEL: dict[str, tuple[float, float, float]] = {
    "f0_range_st": (5.24, 2.52, 0.83),
    "f0_var_st": (2.15, 0.99, -0.33),
    "tilt_db": (-12.37, 8.68, 1.21),
    "energy_range_db": (28.67, 9.14, -0.06),
    "rate_per_s": (5.67, 0.72, 0.51),
}
INTERCEPT = 0.25


def absolute_logit(cues: dict[str, float | None]) -> float | None:
    """The calibrated model's logit; a missing cue counts as average (None: no cue at all)."""
    known = [k for k in CUES if cues.get(k) is not None]
    if not known:
        return None
    z = INTERCEPT
    for k in known:
        mean, sd, w = MODEL[k]
        z += w * float(np.clip((float(cues[k]) - mean) / sd, -4, 4))  # type: ignore[arg-type]
    return z
