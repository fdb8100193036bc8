"""SpeakerMatcher on synthetic mouth and voice signals: a moving mouth wins, a still one never."""

from __future__ import annotations

import numpy as np
import pytest

from stream.analysis.speaker import SpeakerMatcher
from stream.vision.mouth import MouthSample

FPS = 25


def _feed(m: SpeakerMatcher, faces: dict[int, float], seconds: float = 3.0) -> float:
    """Speech whose energy follows a 3 Hz syllable envelope; face n's lip gap opens with it at
    amplitude `faces[n]` (a talking mouth changes by ~0.1-0.2 per frame, a photo's by ~0.03),
    plus a little noise. Returns the last time."""
    rng = np.random.default_rng(1)
    t = 0.0
    for i in range(int(seconds * FPS)):
        t = i / FPS
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
        m.add_voice(t, -40.0 + 30.0 * envelope)
        for face, amp in faces.items():
            # alternate open/closed so that the frame-to-frame change follows the envelope
            gap = amp * envelope * (1 if i % 2 else -1) + rng.normal(0, amp * 0.3)
            m.add_mouth(t, face, MouthSample(0.0, float(gap)))
    return t


def test_a_still_mouth_never_matches_even_when_its_noise_correlates_best() -> None:
    m = SpeakerMatcher(min_motion=0.05)
    t = _feed(m, {1: 0.02})
    unguarded = SpeakerMatcher(min_motion=0.0)
    _feed(unguarded, {1: 0.02})
    print("scores without the motion floor", unguarded.scores(t), "with", m.scores(t))
    assert unguarded.decide(t, True).face == 1  # correlation alone would pick the photo
    assert m.scores(t) == {} and m.decide(t, True).face is None


def test_the_moving_mouth_wins_over_a_still_one_that_correlates_as_well() -> None:
    m = SpeakerMatcher()
    t = _feed(m, {1: 0.02, 2: 0.15})
    d = m.decide(t, True)
    print("scores", m.scores(t), "->", d.face)
    assert d.face == 2 and 1 not in d.scores


def test_min_motion_is_validated() -> None:
    with pytest.raises(ValueError, match="min_motion"):
        SpeakerMatcher(min_motion=-1.0)
