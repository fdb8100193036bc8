"""Live speech turns: a run of speaking prosody reports per audio track, ended by a pause, another
diarized voice or a length cap, each with its estimated vocal activation (`voice.turn` events)."""

from __future__ import annotations

import asyncio

import jsonschema
import pytest

from stream.analysis.fakes import FakeFace, FakeStages, fake_audio_frames, fake_frames
from stream.analysis.live_turns import LiveTurns
from stream.analysis.speaker import ActiveSpeaker
from stream.analysis.voice import SpeakerUpdate
from stream.core.config import load_config
from stream.live.events import schema
from stream.live.testing import run_session
from stream.voice.prosody import ProsodyReport

from .conftest import ROOT

HOP = 0.25
VALIDATOR = jsonschema.Draft202012Validator(schema())


def _update(
    t: float, speaking: bool, voice: int | None = None, face: int | None = 1
) -> SpeakerUpdate:
    r = ProsodyReport(
        t, 2.0, 0.9 if speaking else 0.0, speaking, 180.0 if speaking else None, 6.0, 2.0, 0.8,
        -30.0, 4.0, 0.1, 1, 0.3, tilt_db=-12.0, energy_range_db=18.0,
    )  # fmt: skip
    return SpeakerUpdate("mic", r, ActiveSpeaker(t, face if speaking else None, 0.5, speaking, {}),
                         False, voice)  # fmt: skip


def _feed(
    turns: LiveTurns, pattern: list[tuple[float, bool, int | None]]
) -> list[tuple[float, float, float | None, int | None]]:
    out = []
    for t, speaking, voice in pattern:
        out += turns.add(_update(t, speaking, voice))
    out += turns.flush()
    return [(round(x.start, 2), round(x.end, 2), x.activation, x.voice_id) for x in out]


def test_turns_end_at_pauses_voice_changes_and_the_length_cap() -> None:
    hops = [i * HOP for i in range(60)]  # 15 s
    # 0-3 s speech, a 0.25 s pause (kept in the turn), 3.25-4 s, a 1 s pause, 5-5.5 s (short)
    speaking = [t < 3.0 or 3.25 <= t < 4.0 or 5.0 <= t < 5.5 for t in hops]
    got = _feed(LiveTurns(HOP), [(t, s, None) for t, s in zip(hops, speaking, strict=True)])
    print(f"live turns: {got}")
    assert [(s, e) for s, e, _, _ in got] == [(-0.25, 3.75), (4.75, 5.25)]
    assert got[0][2] is not None and -1.0 <= got[0][2] <= 1.0  # 4 s of speech: a value
    assert got[1][2] is None  # 0.5 s: too short to say
    # Another diarized voice starts a new turn; 12 s of speech is sent in parts of <= 10 s.
    switch = _feed(LiveTurns(HOP), [(t, t < 14.0, 1 if t < 2.0 else 2) for t in hops])
    assert [(s, e, v) for s, e, _, v in switch] == [
        (-0.25, 1.75, 1),
        (1.75, 11.75, 2),
        (11.75, 13.75, 2),
    ]
    with pytest.raises(ValueError):
        LiveTurns(0.0)


def test_a_live_session_sends_voice_turn_events() -> None:
    cfg = load_config(ROOT / "configs" / "default.toml", env={})
    frames = fake_frames(110, [FakeFace(1, (40, 40, 120, 140))])  # 11 s at 10 fps, audio 8 s
    audio = fake_audio_frames([(0.5, 3.5, 180.0), (4.5, 7.5, 180.0)], 8.0)
    events, _ = asyncio.run(run_session(FakeStages(cfg), video=frames, audio={"mic": audio}))
    turns = [e for e in events if e["type"] == "voice.turn"]
    got = [(e["start"], e["end"], e["estimated_vocal_activation"]) for e in turns]
    print(f"voice.turn events: {got}")
    for e in turns:
        VALIDATOR.validate(e)
    # On a loaded machine the session may skip audio it fell behind on (an `audio_behind`
    # error, as live): then the turns are cut where audio was skipped, never longer.
    behind = any(e["type"] == "error" and e["code"] == "audio_behind" for e in events)
    assert len(turns) >= 2 if behind else len(turns) == 2, turns
    for e in turns:
        assert e["speaker"] == "mic" and e["estimated_vocal_activation"] is not None
        a, b = next((a, b) for a, b in [(0.5, 3.5), (4.5, 7.5)] if e["start"] < b)
        assert abs(e["start"] - a) < 0.6 or behind, e
        assert e["end"] <= b + 0.6 and (abs(e["end"] - b) < 0.6 or behind), e
    assert events.index(turns[-1]) < [e["type"] for e in events].index("session.summary")
