"""The per-stream analysis core: voice tracks, live diarization over several audio tracks, frame
schedulers, and the facade's bookkeeping (fast with fake stages; real voices marked integration).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from stream.analysis.budget import MachineBudget
from stream.analysis.fakes import FakeFace, FakeStages, fake_audio_frames, fake_frames
from stream.analysis.schedule import FixedSchedule, FrameScheduler
from stream.analysis.stages import StageSource
from stream.analysis.stream import StreamAnalysis
from stream.analysis.voice import SpeakerUpdate
from stream.analysis.voices import Voices, merge_windows
from stream.core.config import Config, load_config
from stream.vision.pipeline import FrameResult

ROOT = Path(__file__).resolve().parent.parent
#: Two people on their own microphones taking turns (start s, end s) of `TURN_S` each.
TURN_S = 3.5
TURNS_A = [(0.0, 3.5), (7.0, 10.5), (14.0, 17.5)]
TURNS_B = [(3.5, 7.0), (10.5, 14.0), (17.5, 21.0)]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "configs" / "default.toml", env={})


def _overlap(s: float, e: float, turns: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e, b) - max(s, a)) for a, b in turns)


def play_two_tracks(
    stages: StageSource, tracks: dict[str, list[Any]], start: float = 100.0
) -> tuple[StreamAnalysis, list[SpeakerUpdate]]:
    """Feed audio tracks as a live session does: interleaved 20 ms frames with receive times
    on one clock (each track's media time starts at 0), decided on arrival."""
    analysis = StreamAnalysis(stages, 10.0)  # live: online speaker IDs, no holding
    voices = {name: analysis.add_voice(name) for name in tracks}
    updates: list[SpeakerUpdate] = []
    t = dict.fromkeys(tracks, 0.0)
    for i in range(max(len(f) for f in tracks.values())):
        for name, frames in tracks.items():
            if i < len(frames):
                f = frames[i]
                t[name] += f.samples / f.sample_rate
                batch = voices[name].collect(f, received=start + t[name])
                if batch is not None:
                    updates += analysis.accept(name, voices[name].analyse(batch))
    for name in tracks:
        batch = voices[name].collect(None)
        if batch is not None:
            updates += analysis.accept(name, voices[name].analyse(batch))
    updates += analysis.finish()
    return analysis, updates


def check_two_speakers(
    analysis: StreamAnalysis, updates: list[SpeakerUpdate], start: float, min_share: float
) -> None:
    """The two tracks' voices never share a number; every turn of the stream (the summaries'
    and reports' speakers) carries a number of the track that spoke then; each track's main
    number carries at least `min_share` of its voiced reports."""
    ids = {
        name: Counter(u.voice_id for u in updates if u.speaker == name and u.voice_id)
        for name in ("a", "b")
    }
    main = {name: c.most_common(1)[0][0] for name, c in ids.items() if c}
    shares = {n: ids[n][main[n]] / sum(ids[n].values()) for n in main}
    turns = analysis.diarized_segments()
    shifted = {
        "a": [(s + start, e + start) for s, e in TURNS_A],
        "b": [(s + start, e + start) for s, e in TURNS_B],
    }
    voices = analysis.audio.voices
    wrong_track = wrong_number = total = 0.0
    for s, e, n in turns:
        who = max(shifted, key=lambda k: _overlap(s, e, shifted[k]))
        total += e - s
        wrong_track += (e - s) if voices.track_of(n) != who else 0.0
        wrong_number += (e - s) if n != main.get(who) else 0.0
    print(
        f"voice ids per track {dict(ids)}; main share {shares}; {len(turns)} turns over "
        f"{total:.1f} s: {wrong_track:.1f} s on another track's number, {wrong_number:.1f} s "
        "on another number than the track's main one"
    )
    assert set(main) == {"a", "b"} and not set(ids["a"]) & set(ids["b"])
    assert min(shares.values()) >= min_share
    assert total > 0.5 * len(TURNS_A + TURNS_B) * TURN_S
    assert wrong_track == 0.0
    if min_share == 1.0:
        assert wrong_number == 0.0
    speakers = analysis.result(_info(), 0.0).speakers
    assert speakers is not None
    assert {s.number for s in speakers.speakers} >= {main["a"], main["b"]}


def _info() -> Any:
    from stream.core.types import MediaInfo

    return MediaInfo(Path("test"), "live", 0, 0, 21.0, 10.0, "test", True)


# -- fast: fake stages -----------------------------------------------------------------------
def test_live_diarization_over_two_audio_tracks_keeps_each_tracks_numbers(cfg: Config) -> None:
    """diarization.live with two audio tracks: every turn keeps its own track's number (the
    turns were re-mapped as the last track's before the fix)."""
    stages = FakeStages(cfg.replace("diarization", live=True))
    a = fake_audio_frames([(s, e, 180.0) for s, e in TURNS_A], 21.0)
    b = fake_audio_frames([(s, e, 700.0) for s, e in TURNS_B], 21.0)
    analysis, updates = play_two_tracks(stages, {"a": a, "b": b})
    check_two_speakers(analysis, updates, 100.0, 1.0)


def test_merge_windows_numbers_one_track() -> None:
    v = Voices(0.5)
    spans = [(0.0, 1.5, 1), (0.75, 2.25, 1), (1.5, 3.0, 2)]
    turns = merge_windows(spans, lambda local: v.number("b", local))
    assert turns == [(0.0, 1.875, 1), (1.875, 3.0, 2)]
    assert v.number("a", 1) == 3  # numbers are per (track, local speaker), in order


def test_voice_links_and_names() -> None:
    v = Voices(0.5)
    n = v.number("room", 1)
    assert [v.heard(n, 4) for _ in range(3)] == [None, None, None]  # too few reports
    assert v.heard(n, 4) == 4 and v.heard(n, None) == 4
    assert v.name(n) == "Speaker 1"
    v.rename(n, "Caller")
    assert v.name(n) == "Caller"
    v.reset()
    assert v.name(1) == "Speaker 1" and v.face_of(1) is None
    with pytest.raises(ValueError):
        Voices(0.0)


def test_file_voice_waits_for_video_and_ended_tracks_stay_in_results(cfg: Config) -> None:
    """hold_voice (files): a report is decided once video reached its time. A live audio track
    that ended keeps its reports in the results (a session's saved reports have its voice)."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0, hold_voice=True, online_speakers=False)
    voice = analysis.add_voice("audio", offset=0.5)  # audio starts 0.5 s into the video
    held = []
    for f in fake_audio_frames([(0.0, 3.0, 220.0)], 3.0):
        held += voice.push(f, until=analysis.voice_until)
    assert held == []  # no video yet
    frames = fake_frames(20, [FakeFace(1, (40, 40, 120, 140))])  # 0 .. 1.9 s
    released = []
    for fr in frames:
        analysis.push_video(fr)
        released += analysis.release_voice()
    last = max(u.report.t for u in released) + 0.5
    print(f"{len(released)} reports decided by video at 1.9 s, the last at {last:.2f} s")
    assert released and last <= 1.9 + 1e-6
    rest = analysis.finish()
    assert rest and min(u.report.t for u in rest) + 0.5 > 1.9
    analysis.end_voice("audio")
    result = analysis.result(_info(), 0.0)
    assert not analysis.speakers and result.voice is not None
    analysis.drop_voice("audio")  # an unknown track: nothing happens


def test_mouths_are_measured_only_while_a_voice_may_be_matched(cfg: Config) -> None:
    """Without an audio track no mouth is measured (it took ~8% of a one-face file's main
    loop); from the first audio track on, every face's mouth is."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0)
    frames = fake_frames(8, [FakeFace(1, (40, 40, 120, 140), mouth=0.5)])
    silent = [f for fr in frames[:4] for f in analysis.push_video(fr).faces]
    analysis.add_voice("audio")
    heard = [f for fr in frames[4:] for f in analysis.push_video(fr).faces]
    print("mouths without a voice:", [f.mouth for f in silent])
    print("with one:", [f.mouth for f in heard])
    assert len(silent) >= 2 and all(f.mouth is None for f in silent)
    assert len(heard) == 4 and all(f.mouth is not None for f in heard[1:])  # 1st: no previous


def test_file_voice_reports_wait_for_the_audio_their_match_reads(cfg: Config) -> None:
    """hold_voice (files): a report is matched with the voice up to the matcher's largest
    audio-video lag after it, so it also waits for that audio; deciding it earlier would
    depend on how far the file's audio thread had got (the two-speaker video's
    face_link_share was 0.861 in one run of four, 0.917 in the others)."""
    analysis = StreamAnalysis(FakeStages(cfg), 10.0, hold_voice=True, online_speakers=False)
    voice = analysis.add_voice("audio")
    for fr in fake_frames(40, [FakeFace(1, (40, 40, 120, 140))]):  # video 0 .. 3.9 s
        analysis.push_video(fr)
    decided = []
    for f in fake_audio_frames([(0.0, 2.1, 220.0)], 2.1):  # reports every 0.25 s
        decided += voice.push(f, until=analysis.voice_until)
    lag = float(voice.matcher.lags[-1])
    held = analysis.finish()
    print(f"audio to {voice.audio_end:.2f} s: decided up to {decided[-1].report.t:.2f} s,")
    print(f"held {[round(u.report.t, 2) for u in held]} until the end (lag {lag:.2f} s)")
    assert decided and decided[-1].report.t <= voice.audio_end - lag + 1e-9
    assert held and held[0].report.t > voice.audio_end - lag


# -- schedulers ------------------------------------------------------------------------------
class _Recorder:
    """A scheduler that detects every 3rd frame and computes no expression after the first."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bool, int]] = []
        self.n = 0

    def plan(self, t: float, known_faces: list[int]) -> tuple[bool, set[int] | None]:
        self.n += 1
        return self.n % 3 == 1, (None if self.n == 1 else set())

    def observe(self, t: float, result: FrameResult, detected: bool) -> None:
        self.seen.append((t, detected, result.emotions))


def test_push_video_plans_with_each_tracks_injected_scheduler(cfg: Config) -> None:
    made: list[_Recorder] = []

    def schedule() -> _Recorder:
        made.append(_Recorder())
        return made[-1]

    analysis = StreamAnalysis(FakeStages(cfg), 10.0, schedule=schedule)
    frames = fake_frames(6, [FakeFace(0, (40, 40, 120, 140))])
    for fr in frames:
        analysis.push_video(fr, "cam1")
        analysis.push_video(fr, "cam2")
    analysis.push_video(frames[0], "cam1", detect=True)  # told: not planned, not observed
    print(f"cam1 (t, detected, expressions): {made[0].seen}")
    assert len(made) == 2 and analysis.scheduler("cam1") is made[0]
    assert [d for _, d, _ in made[0].seen] == [True, False, False, True, False, False]
    # The face is confirmed by the 2nd detection; a new face always gets its expression.
    assert [e for _, _, e in made[0].seen] == [0, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError):
        analysis.push_video(frames[0], emotion_for={1})


def _same(s: FrameScheduler) -> FrameScheduler:
    return s


def test_both_schedulers_keep_the_contract(cfg: Config) -> None:
    """FixedSchedule (files) and a live TrackBudget plan and observe the same way."""
    schedulers: list[FrameScheduler] = [FixedSchedule(5.0, 5.0), MachineBudget(cfg).track()]
    for sched in schedulers:
        analysis = StreamAnalysis(FakeStages(cfg), 10.0, schedule=functools.partial(_same, sched))
        detected = 0
        for fr in fake_frames(20, [FakeFace(0, (40, 40, 120, 140))], fps=30.0):
            r = analysis.push_video(fr)
            detected += r.timings_ms.get("detect") is not None
        print(f"{type(sched).__name__}: detected {detected} of 20 frames at 30 fps")
        assert 1 <= detected <= 20
        assert analysis.summary()["faces"][0]["analysed_frames"] >= 18
    assert math.isinf(StreamAnalysis(FakeStages(cfg), 10.0).voice_until)


def test_reset_forgets_faces_names_and_voices(cfg: Config) -> None:
    analysis = StreamAnalysis(FakeStages(cfg), 10.0, thumbnails=True)
    analysis.name_track("cam", "Alice")
    frames = fake_frames(5, [FakeFace(0, (40, 40, 120, 140)), FakeFace(3, (180, 40, 260, 140))])
    numbers = sorted(f.number for fr in frames for f in analysis.push_video(fr, "cam").faces)
    names = {analysis.name_of(n) for n in numbers}
    analysis.rename_speaker(1, "Caller")
    assert names == {"Alice", "Alice 2"}
    assert analysis.result(_info(), 0.0).thumbnails.keys() == {1, 2}
    analysis.reset()
    assert analysis.summary()["faces"] == [] and analysis.audio.voices.name(1) == "Speaker 1"
    again = {analysis.name_of(f.number) for f in analysis.push_video(frames[0], "cam").faces}
    assert again == {"Alice"} or again == set()  # tentative on the first frame after a reset
    assert analysis.result(_info(), 0.0).thumbnails.keys() <= {1, 2}


# -- integration: real voices, real models ---------------------------------------------------
def _frames16k(x: np.ndarray) -> list[av.AudioFrame]:
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm) - 320 + 1, 320):
        f = av.AudioFrame.from_ndarray(pcm[None, i : i + 320], format="s16", layout="mono")
        f.sample_rate = 16_000
        f.pts = i
        f.time_base = Fraction(1, 16_000)
        out.append(f)
    return out


def _track(chunks: list[np.ndarray], turns: list[tuple[float, float]], seconds: float) -> Any:
    x = np.zeros(int(seconds * 16_000), np.float32)
    for c, (s, _) in zip(chunks, turns, strict=False):
        a = int(s * 16_000)
        n = min(len(c), int(TURN_S * 16_000), len(x) - a)
        x[a : a + n] = c[:n]
    return _frames16k(x)


@pytest.mark.integration
def test_live_diarization_two_audio_tracks_real_voices(config: Config) -> None:
    """Two LibriSpeech readers, each on their own audio track, taking turns; real voice chain
    and voice prints with diarization.live: the tracks never share a number and every turn
    carries its own track's number (before the fix, all turns took the last track's)."""
    from stream.analysis.stages import Stages

    from .compose_voices import speaker_chunks

    stages = Stages(config.replace("diarization", live=True))
    a = _track(speaker_chunks("libri0"), TURNS_A, 21.0)
    b = _track(speaker_chunks("libri1"), TURNS_B, 21.0)
    analysis, updates = play_two_tracks(stages, {"a": a, "b": b})
    # One reader with 10 s of speech gets 2-3 online IDs on its track (measured: the same
    # before this change, one track alone): the online diarizer's own limit, not the tracks'.
    check_two_speakers(analysis, updates, 100.0, 0.35)
