"""Canonical expression labels and the circumplex table used to estimate valence/arousal."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

#: Our canonical label order. Every probability vector in the package uses it.
LABELS: Final[tuple[str, ...]] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)
LABEL_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(LABELS)}

#: Shown instead of a label when the smoothed confidence is too low to name one.
UNCERTAIN: Final[str] = "uncertain"

#: Synonyms used by upstream models, mapped to canonical labels.
ALIASES: Final[dict[str, str]] = {
    "happy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "fearful": "fear",
    "afraid": "fear",
    "disgusted": "disgust",
    "angry": "anger",
    "contemptuous": "contempt",
}

#: (valence, arousal) in [-1, 1] per canonical label, a coarse circumplex placement.
#: Neutral sits at the origin. happiness, sadness, anger, fear and surprise take the positions
#: of the affect words "happy", "sad", "angry", "afraid" and "astonished" in Russell (1980),
#: "A circumplex model of affect", J. Pers. Soc. Psychol. 39(6), Fig. 4 (read off the figure,
#: rounded to two decimals). Russell's 28 words include neither disgust nor contempt; we place
#: them in the unpleasant, moderately aroused quadrant between "annoyed" and "distressed",
#: contempt calmer than disgust. Values derived from this table are *estimates* and are labelled
#: as such wherever they appear.
CIRCUMPLEX: Final[dict[str, tuple[float, float]]] = {
    "neutral": (0.00, 0.00),
    "happiness": (0.83, 0.53),
    "sadness": (-0.65, -0.27),
    "surprise": (0.16, 0.89),
    "fear": (-0.34, 0.64),
    "disgust": (-0.60, 0.35),
    "anger": (-0.52, 0.58),
    "contempt": (-0.55, 0.20),
}


def canonical(name: str) -> str:
    """Return the canonical label for an upstream class name.

    Raises:
        ValueError: the name is neither canonical nor a known alias.
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in LABEL_INDEX:
        raise ValueError(f"unknown expression label {name!r}; known: {', '.join(LABELS)}")
    return key


def estimate_valence_arousal(
    probs: npt.NDArray[np.floating], supported: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """Estimate (valence, arousal) per row as the probability-weighted circumplex position.

    Args:
        probs: [N, 8] probabilities in canonical order (unsupported labels ignored).
        supported: [8] mask of labels the classifier can output.

    Returns:
        [N, 2] float32 estimates in [-1, 1].
    """
    table = np.array([CIRCUMPLEX[name] for name in LABELS], dtype=np.float32)
    p = np.where(supported[None, :], np.asarray(probs, dtype=np.float32), 0.0)
    total = p.sum(axis=1, keepdims=True)
    p = p / np.maximum(total, 1e-9)
    return np.asarray(p @ table, dtype=np.float32)
