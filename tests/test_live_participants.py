"""Live participants: a face and the voice matched to its mouth are one person in the
session summary event, as in the file JSON's `participants[]`."""

from __future__ import annotations

import jsonschema

from stream.analysis.aggregate import FaceSummary
from stream.analysis.participants import live_participants
from stream.analysis.speaker import ActiveSpeaker
from stream.analysis.voice_summary import summarise_voice
from stream.live.events import SessionSummary, envelope, schema
from stream.voice.prosody import ProsodyReport

VALIDATOR = jsonschema.Draft202012Validator(schema())
HOP = 0.25


def _face(n: int, dominant: str) -> FaceSummary:
    return FaceSummary(
        number=n,
        name=f"Face {n}" if n != 1 else "Alice",
        first_seen=float(n),
        last_seen=30.0,
        visible_s=29.0 - n,
        samples=100,
        dominant=dominant,
        dominant_share=0.6,
        shares={dominant: 0.6, "uncertain": 0.4},
        mean_probabilities={dominant: 0.6},
        mean_valence=0.1,
        mean_arousal=0.2,
    )


def _report(t: float, speaking: bool, activation: float | None) -> ProsodyReport:
    return ProsodyReport(
        t, 2.0, 0.9 if speaking else 0.0, speaking, 180.0, 5.0, 2.0, 0.8, -30.0, 4.0, 0.1, 1,
        0.3, activation=activation,
    )  # fmt: skip


def test_a_face_and_the_voice_matched_to_it_are_one_participant() -> None:
    # Face 1 speaks 40 hops (activation +0.5 for 30 of them, then -0.5 for 10; the first
    # two windows are too short for a value); face 2 is silent; 8 hops nobody visible matches.
    timeline = []
    for i in range(50):
        t = i * HOP
        if i < 40:
            act = None if i < 2 else (0.5 if i < 32 else -0.5)
            timeline.append((_report(t, True, act), ActiveSpeaker(t, 1, 0.6, True, {1: 0.6})))
        elif i < 48:
            timeline.append((_report(t, True, 0.9), ActiveSpeaker(t, None, 0.1, True, {})))
        else:
            timeline.append((_report(t, False, None), ActiveSpeaker(t, None, 0.0, False, {})))
    voice = summarise_voice(timeline, HOP, denoised=False)
    people = live_participants([_face(1, "happiness"), _face(2, "neutral")], voice, None)
    print(f"live participants: {people}")
    alice, two = people
    assert alice["name"] == "Alice" and alice["face_id"] == 1 and alice["speaker_id"] is None
    assert alice["speaking_s"] == 40 * HOP
    act = alice["vocal_activation"]
    assert act["label"] == "estimated vocal activation" and act["median"] == 0.5
    assert act["share_high"] == round(30 / 38, 3) and act["share_low"] == round(8 / 38, 3)
    assert alice["expression"]["dominant"] == "happiness"
    assert two["face_id"] == 2 and two["speaking_s"] is None and two["vocal_activation"] is None
    # Without any audio track: faces only, as a file without audio.
    assert [
        p["vocal_activation"] for p in live_participants([_face(2, "neutral")], None, None)
    ] == [None]
    overall = {"faces": 2, "person_seconds": 55.0, "shares": {"neutral": 1.0},
               "dominant": {"label": "neutral", "share": 1.0}}  # fmt: skip
    event = envelope(SessionSummary(30.0, [], overall, people), "session-1", 0, 1.0)
    VALIDATOR.validate(event)
    bad = {**people[0], "vocal_activation": {**act, "median": 1.5}}
    assert not VALIDATOR.is_valid({**event, "participants": [bad]})
