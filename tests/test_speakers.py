"""Speakers and facial actions on real data: diarization error, speaker counts, audio-only
analyze, speaker <-> face links, smile/jaw AUCs, and the live path's events."""

from __future__ import annotations

import asyncio
import csv
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import jsonschema
import numpy as np
import pytest

from stream.analysis.stages import Stages
from stream.core.config import Config
from stream.core.types import VideoFrame
from stream.live.events import schema
from stream.live.testing import run_session
from stream.offline.analyze import analyze_file
from stream.offline.media import read_frames
from stream.vision.blendshapes import FaceActionModel
from stream.voice.diarize import Diarizer, diarization_error, read_rttm
from stream.voice.speaker_embed import SpeakerEmbedder
from stream.voice.vad import SileroVad

from .compose import two_speaker_video
from .compose_voices import AUDIO, compose, load16k
from .conftest import MEDIA, read_labels

VALIDATOR = jsonschema.Draft202012Validator(schema())


def diarize(stages: Stages, audio: np.ndarray) -> list[tuple[float, float, str]]:
    """Silero VAD + the diarizer over 16 kHz audio fed in 0.1 s chunks (as the voice chain)."""
    embedder = stages.speaker_embedder
    assert isinstance(embedder, SpeakerEmbedder)
    vad = SileroVad(stages.factory.get("silero_vad_v6"))
    d = Diarizer(embedder)
    for i in range(0, len(audio), 1600):
        chunk = audio[i : i + 1600]
        d.add(chunk, vad.process(chunk))
    d.flush()
    return [(s.start, s.end, str(s.speaker)) for s in d.segments()]


@pytest.mark.integration
def test_der_on_the_pyannote_sample(stages: Stages) -> None:
    ref = read_rttm((AUDIO / "annotations" / "pyannote_sample.rttm").read_text())
    hyp = diarize(stages, load16k(AUDIO / "pyannote_sample.wav"))
    e = diarization_error(ref, hyp, collar=0.25)
    print(
        "pyannote_sample: "
        f"DER {e['der']:.1%} (miss {e['miss']:.1%}, false alarm "
        f"{e['false_alarm']:.1%}, confusion {e['confusion']:.1%}), "
        f"{len({h[2] for h in hyp})} speakers"
    )
    assert len({h[2] for h in hyp}) == 2
    assert e["der"] <= 0.25


@pytest.mark.integration
def test_analyze_of_the_pyannote_sample_finds_both_speakers(config: Config, stages: Stages) -> None:
    """The product path (denoised prosody, voice prints on the original audio), not just the
    diarizer: `emotion-stream analyze` of a two-person recording."""
    ref = read_rttm((AUDIO / "annotations" / "pyannote_sample.rttm").read_text())
    a = analyze_file(AUDIO / "pyannote_sample.wav", config, stages=stages)
    assert a.speakers is not None and config.audio.denoise
    hyp = [(t.start, t.end, str(t.speaker)) for t in a.speakers.turns]
    e = diarization_error(ref, hyp, collar=0.25)
    print(f"analyze pyannote_sample.wav: {len(a.speakers.speakers)} speakers, DER {e['der']:.1%}")
    assert len(a.speakers.speakers) == 2 and e["der"] <= 0.25


@pytest.mark.integration
@pytest.mark.parametrize(
    "speakers",
    [
        ["libri0", "libri1"],
        ["libri0", "libri1", "libri2"],
        ["libri0", "libri1", "libri2", "emodb03"],
    ],
)
def test_speaker_count_and_der_on_composed_calls(stages: Stages, speakers: list[str]) -> None:
    audio, ref = compose(speakers, 4 * len(speakers) - 2)
    hyp = diarize(stages, audio)
    e = diarization_error(ref, hyp)
    found = len({h[2] for h in hyp})
    print(f"{len(speakers)} speakers ({', '.join(speakers)}): found {found}, DER {e['der']:.1%}")
    assert found == len(speakers)
    assert e["der"] <= 0.15


@pytest.mark.integration
def test_one_reader_stays_one_speaker(stages: Stages) -> None:
    audio, _ = compose(["libri1"], 5)
    hyp = diarize(stages, audio)
    print(f"one reader: {len({h[2] for h in hyp})} speaker(s)")
    assert len({h[2] for h in hyp}) == 1


def _encode(audio: np.ndarray, path: Path) -> None:
    codec = {".wav": "pcm_s16le", ".mp3": "libmp3lame", ".opus": "libopus"}[path.suffix]
    rate = 48_000 if path.suffix == ".opus" else 16_000
    with av.open(str(path), "w") as c:
        s: Any = c.add_stream(codec, rate=rate, layout="mono")
        r = av.AudioResampler(format=s.codec_context.format.name, layout="mono", rate=rate)
        f = av.AudioFrame.from_ndarray(
            (audio * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        f.sample_rate = 16_000
        for x in [*r.resample(f), *r.resample(None)]:
            c.mux(s.encode(x))
        c.mux(s.encode(None))


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".opus"])
def test_audio_only_analyze(suffix: str, tmp_path: Path, config: Config, stages: Stages) -> None:
    audio, ref = compose(["libri0", "libri2"], 6, seed=1)
    path = tmp_path / f"call{suffix}"
    _encode(audio, path)
    a = analyze_file(path, config, stages=stages)
    assert a.info.kind == "audio" and a.speakers is not None
    sp = a.speakers.speakers
    truth: dict[str, float] = {}
    for s, e, who in ref:
        truth[who] = truth.get(who, 0.0) + e - s
    print(
        f"{suffix}: "
        + "; ".join(
            f"{x.name} {x.speaking_s:.1f} s {x.turns} turns {x.f0_median_hz or 0:.0f} Hz"
            for x in sp
        )
        + f" (truth {sorted(round(v, 1) for v in truth.values())})"
    )
    assert [x.name for x in sp] == ["Speaker 1", "Speaker 2"]
    assert all(x.turns == 3 for x in sp)
    assert all(x.f0_median_hz is not None for x in sp)
    assert sorted(x.speaking_s for x in sp) == pytest.approx(sorted(truth.values()), abs=1.5)
    d = json.loads(json.dumps(a.to_dict()))
    assert d["speakers"]["count"] == 2 and d["source"]["kind"] == "audio"
    from stream.analysis import report

    rows = list(csv.DictReader(report.csv_text(a).splitlines()))
    assert {r["speaker_name"] for r in rows} == {"Speaker 1", "Speaker 2"}
    html = report.render_html(a)
    assert "Speakers" in html and "Speaker 2" in html
    assert any("Speaker 1" in line for line in report.summary_lines(a))


@pytest.mark.integration
def test_speakers_link_to_faces_on_a_two_tile_video(
    tmp_path: Path, config: Config, stages: Stages
) -> None:
    """Two tiles with their own (looped, short) voices: each face is linked to a speaker."""
    path = tmp_path / "two.mp4"
    segments = [
        (0.0, 5.0, "left"),
        (5.0, 10.0, "right"),
        (10.0, 15.0, "left"),
        (15.0, 20.0, "right"),
    ]
    two_speaker_video(
        path,
        ("face_recognition_short_hamilton_clip.mp4", (140, 0, 240), (3.9, 7.9)),
        ("mexca_test_video_audio_5_seconds.mp4", (204, 5, 200), (4.0, 5.0)),
        segments,
    )
    a = analyze_file(path, config, stages=stages)
    assert a.speakers is not None
    side = {
        f.number: "left" if a.timelines[f.number][0].sample.box[2] < 0.55 else "right"
        for f in a.faces
    }
    links = {
        x.name: (side.get(x.face) if x.face else None, round(x.face_share, 2))
        for x in a.speakers.speakers
    }
    print(f"speakers: {links}")
    linked = {side[x.face] for x in a.speakers.speakers if x.face is not None}
    assert linked == {"left", "right"}
    # The looped one-second clips over-split into up to 4 voices (known weakness, printed).
    assert 2 <= len(a.speakers.speakers) <= 4
    # Facial actions were computed for both faces and reach the reports.
    assert {side[n] for n in a.actions} == {"left", "right"}
    assert a.to_dict()["facial_actions"]["faces"][0]["samples"] > 10
    # One participant per linked face + voice; unlinked voices stay their own participants.
    people = a.to_dict()["participants"]
    print("participants: " + "; ".join(f"{p['name']} (speaker {p['speaker_id']})" for p in people))
    both = [p for p in people if p["face_id"] is not None and p["speaker_id"] is not None]
    assert {side[p["face_id"]] for p in both} == {"left", "right"}
    assert all(p["expression"] and p["vocal_activation"] for p in both)
    voices_only = [p for p in people if p["face_id"] is None]
    assert len(both) + len(voices_only) == len(a.speakers.speakers)
    from stream.analysis import report

    assert "Participants" in report.render_html(a)


def _auc(pos: list[float], neg: list[float]) -> float:
    p, n = np.array(pos)[:, None], np.array(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


@pytest.mark.integration
def test_smile_and_jaw_rank_expressions(stages: Stages) -> None:
    model = stages.action_model
    assert isinstance(model, FaceActionModel)
    detector = stages.vision_models.detector
    root = MEDIA / "expressions"
    scores: dict[str, list[dict[str, float]]] = {}
    for row in read_labels(root / "labels.csv"):
        if row["file"].startswith("fer2013") or row["label"] not in (
            "happiness",
            "neutral",
            "surprise",
        ):
            continue
        img = np.asarray(cv2.imread(str(root / row["file"]), cv2.IMREAD_COLOR), np.uint8)
        dets = detector(VideoFrame(np.ascontiguousarray(img), 0.0))
        if len(dets) == 0:
            continue
        i = int(
            np.argmax((dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1]))
        )
        rgb = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.uint8)
        fa = model(rgb, dets.boxes[i], dets.landmarks[i][:2])
        scores.setdefault(row["label"], []).append(fa.units)
    smile = _auc(
        [u["AU12_smile"] for u in scores["happiness"]], [u["AU12_smile"] for u in scores["neutral"]]
    )
    jaw = _auc(
        [u["AU26_jaw_drop"] for u in scores["surprise"]],
        [u["AU26_jaw_drop"] for u in scores["neutral"]],
    )
    print(
        f"smile: happiness vs neutral AUC {smile:.3f} ({len(scores['happiness'])} vs "
        f"{len(scores['neutral'])}); jaw open: surprise vs neutral AUC {jaw:.3f}"
    )
    assert smile >= 0.95
    assert jaw >= 0.9


@pytest.mark.integration
def test_live_events_carry_facial_actions_and_speaker_ids(config: Config) -> None:
    # A room microphone: online speaker IDs on the live track (off by default).
    stages = Stages(config.replace("diarization", live=True))
    frames = list(read_frames(MEDIA / "video" / "mexca_test_video_audio_5_seconds.mp4", 10.0))
    audio, _ = compose(["libri0", "libri1"], 4, seed=2)
    audio = audio[: int(len(frames) / 10.0 * 16_000)]
    pcm = (audio * 32767).astype(np.int16)
    chunks = []
    for i in range(0, len(pcm) - 320, 320):
        f = av.AudioFrame.from_ndarray(pcm[None, i : i + 320], format="s16", layout="mono")
        f.sample_rate = 16_000
        f.pts = i
        f.time_base = Fraction(1, 16_000)
        chunks.append(f)
    rename = {"type": "rename_speaker", "id": 1, "name": "Caller"}
    events, _ = asyncio.run(
        run_session(stages, video=frames, audio={"room": chunks}, commands={25: rename})
    )
    for ev in events:
        VALIDATOR.validate(ev)
    renamed = next(e["seq"] for e in events if e["type"] == "speaker.renamed")
    later = [e for e in events if e["type"] == "prosody" and e.get("voice_id") == 1]
    assert any(e["seq"] > renamed for e in later), "voice 1 speaks after the rename"
    assert all(e["voice_name"] == "Caller" for e in later if e["seq"] > renamed)
    actions = [
        f["actions"] for e in events if e["type"] == "frame" for f in e["faces"] if "actions" in f
    ]
    voices = {e["voice_name"] for e in events if e["type"] == "prosody" and e.get("voice_id")}
    print(f"live: {len(actions)} face entries with facial actions; voices {sorted(voices)}")
    assert actions and "AU12_smile" in actions[-1]
    assert voices and voices <= {"Caller", "Speaker 1", "Speaker 2", "Speaker 3"}


def test_every_turn_of_a_call_gets_an_estimated_vocal_activation(
    tmp_path: Path, config: Config, stages: Stages
) -> None:
    """Audio-only analyze of a composed call: per speaker, turns with an activation value (all
    of at least 0.8 s), a summary, the CSV column and the HTML lanes."""
    from stream.analysis import report

    from .compose_calls import compose_call

    call = compose_call("two", ["e03", "e08"], turns=8, turn_s=(1.5, 3.0), seed=11)
    path = tmp_path / "call.wav"
    _encode(call.audio, path)
    a = analyze_file(path, config, stages=stages)
    assert a.speakers is not None and a.speakers.speakers
    for x in a.speakers.speakers:
        values = [t.arousal for t in x.voice_turns]
        print(
            f"{x.name}: {len(x.voice_turns)} turns, activation "
            + " ".join("-" if v is None else f"{v:+.2f}" for v in values)
            + f"; median {x.activation.median}, high {x.activation.high_share:.0%}, "
            f"low {x.activation.low_share:.0%}"
        )
        assert all(
            t.arousal is not None and -1 <= t.arousal <= 1
            for t in x.voice_turns
            if t.end - t.start >= 0.8
        )
    d = json.loads(json.dumps(a.to_dict()))
    sp0 = d["speakers"]["speakers"][0]
    assert sp0["vocal_activation"]["label"] == "estimated vocal activation"
    assert {"start", "end", "arousal"} <= set(sp0["voice_turns"][0])
    rows = list(csv.DictReader(report.csv_text(a).splitlines()))
    assert any(r["estimated_vocal_activation"] for r in rows)
    html = report.render_html(a)
    assert (
        "estimated vocal activation" in html.lower()
        and "emotion" not in sp0["vocal_activation"]["label"]
    )
