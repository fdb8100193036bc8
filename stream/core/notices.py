"""User-facing texts defined once: the honesty notices and the default display names."""

from __future__ import annotations

from typing import Final

#: Shown wherever expression labels are shown (terminal, JSON, HTML, events; the web pages take
#: it from the `session.started` event).
EXPRESSIONS_NOT_FEELINGS: Final[str] = (
    "Expressions are not feelings: labels describe visible facial expressions as scored by "
    "machine-learning models, each with its confidence. They do not tell what a person feels."
)

#: Appended where valence/arousal appear.
VA_ESTIMATED: Final[str] = (
    "Valence/arousal marked estimated are derived from the expression probabilities, not measured."
)

#: The full notice of reports and events.
NOTICE: Final[str] = f"{EXPRESSIONS_NOT_FEELINGS} {VA_ESTIMATED}"

#: One line for the command line's help.
REGULATION: Final[str] = (
    "Expressions are not feelings. Do not use this to judge employees or students (EU AI Act)."
)

#: How voices are attributed and what the prosody numbers are.
VOICE_NOTICE: Final[str] = (
    "Prosody is measured on denoised speech where voice activity is detected. The speaker is the "
    "visible face whose mouth movement matches the voice; speech no face matches is reported as "
    "unattributed (off-screen or unclear). Vocal arousal is a heuristic from energy, pitch and "
    "rate z-scores, not an emotion label."
)


def face_name(number: int) -> str:
    """The default display name of face `number` ("Face 1", ...)."""
    return f"Face {number}"
