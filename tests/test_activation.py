"""Estimated vocal activation: calibration on acted speech with speaker-independent
cross-validation (EmoDB, leave one speaker out), and a value for every clip of a few seconds."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.config import AudioConfig
from stream.models.runtime import SessionFactory
from stream.voice.activation import (
    CUES,
    SpeakerActivation,
    TurnCues,
    absolute_logit,
    auc,
    fit,
    matrix,
    predict,
)
from stream.voice.activation_model import INTERCEPT, MODEL
from stream.voice.analyzer import VoiceAnalyzer
from stream.voice.prosody import ProsodyReport
from stream.voice.resample import array_frame

from .compose_calls import at_peak
from .compose_voices import AUDIO, load16k

HIGH, LOW = set("WFA"), set("NTL")  # anger, happiness, fear / neutral, sadness, boredom


def _report(t: float, **kw: float | None) -> ProsodyReport:
    base: dict[str, float | None] = dict(
        f0_median_hz=150.0,
        f0_range_st=5.0,
        f0_var_st=2.0,
        rate_per_s=5.0,
        tilt_db=-12.0,
        energy_range_db=28.0,
    )
    base.update(kw)
    return ProsodyReport(
        t,
        2.0,
        1.0,
        True,
        base["f0_median_hz"],
        base["f0_range_st"],
        base["f0_var_st"],
        0.9,
        -30.0,
        base["rate_per_s"],
        0.0,
        0,
        None,
        tilt_db=base["tilt_db"],
        energy_range_db=base["energy_range_db"],
    )


def test_a_brighter_wider_faster_turn_scores_higher() -> None:
    calm = [_report(t, f0_range_st=3.0, tilt_db=-20.0, rate_per_s=4.0) for t in (0.5, 0.75, 1.0)]
    keen = [_report(t, f0_range_st=8.0, tilt_db=-5.0, rate_per_s=6.5) for t in (0.5, 0.75, 1.0)]
    a, b = SpeakerActivation(), SpeakerActivation()
    low = a.score(TurnCues.of(calm, 0.0, 1.0))
    high = b.score(TurnCues.of(keen, 0.0, 1.0))
    assert low is not None and high is not None and -1 <= low < 0 < high <= 1
    assert a.score(TurnCues.of(calm, 0.0, 0.5)) is None  # shorter than 0.8 s: no value
    assert absolute_logit({}) is None


def test_the_baseline_takes_part_once_formed() -> None:
    sp = SpeakerActivation(baseline_turns=3, full_weight_s=3.0)
    steady = [_report(t) for t in (0.5, 0.75, 1.0)]
    first = [sp.score(TurnCues.of(steady, 0.0, 1.0)) for _ in range(3)]
    loud = [_report(t, f0_median_hz=220.0, tilt_db=-8.0) for t in (0.5, 0.75, 1.0)]
    alone = SpeakerActivation().score(TurnCues.of(loud, 0.0, 1.0))
    with_baseline = sp.score(TurnCues.of(loud, 0.0, 1.0))
    print(f"steady turns {first}, a higher brighter turn {alone:.2f} alone, {with_baseline:.2f}")
    assert alone is not None and with_baseline is not None and with_baseline > alone


@pytest.mark.integration
def test_emodb_speaker_independent_auc(factory: SessionFactory) -> None:
    rows: list[tuple[str, int, dict[str, float | None]]] = []
    valued = per_hop = 0
    clips = sorted(AUDIO.glob("emodb_*.wav"))
    for path in clips:
        code = path.stem[len("emodb_") :]
        x = at_peak(load16k(path), -32.0)  # a laptop microphone's level
        va = VoiceAnalyzer(factory, AudioConfig())
        reports = []
        for i in range(0, len(x), 1600):
            reports += va.feed(array_frame(x[i : i + 1600], 16000)).reports
        reports += va.feed(None).reports
        cues = TurnCues.of(reports, 0.0, len(x) / 16000)
        valued += SpeakerActivation().score(cues) is not None
        per_hop += any(r.activation is not None for r in reports)  # live prosody events
        if code[5] in HIGH | LOW:
            rows.append((code[:2], int(code[5] in HIGH), cues.values))
    x_all = matrix([r[2] for r in rows])
    y = np.array([r[1] for r in rows])
    spk = np.array([r[0] for r in rows])
    per = {}
    for s in sorted(set(spk)):
        held = spk == s
        per[s] = auc(predict(fit(x_all[~held], y[~held]), x_all[held]), y[held])
    shipped = {
        "b": INTERCEPT,
        **{
            f"{p}_{k}": v
            for k, (m, sd, w) in MODEL.items()
            for p, v in zip(("mean", "sd", "w"), (m, sd, w), strict=True)
        },
    }
    refit = fit(x_all, y)
    print(f"{len(rows)} clips, {y.sum()} high; a value for {valued} of {len(clips)} clips")
    print("AUC per held-out speaker: " + ", ".join(f"{s} {v:.2f}" for s, v in per.items()))
    print(
        f"mean {np.nanmean(list(per.values())):.3f}; "
        f"shipped model on all {auc(predict(shipped, x_all), y):.3f}"
    )
    print(
        "refit: "
        + ", ".join(
            f"{k} ({refit[f'mean_{k}']:.2f}, {refit[f'sd_{k}']:.2f}, {refit[f'w_{k}']:.2f})"
            for k in CUES
        )
        + f", b {refit['b']:.2f}"
    )
    print(f"per-hop estimated activation in {per_hop} of {len(clips)} clips")
    assert valued == len(clips) and per_hop >= 0.9 * len(clips)
    assert float(np.nanmean(list(per.values()))) >= 0.8
    assert min(per.values()) >= 0.5
