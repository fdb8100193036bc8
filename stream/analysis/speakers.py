"""Speakers of a stream: diarized voices ("Speaker 1", ...), their turns and prosody, and the
face each one is linked to by mouth matching (speakers never matched keep their own ID)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from stream.analysis.speaker import ActiveSpeaker
from stream.analysis.voice_summary import ProsodyMedians
from stream.voice.activation import SpeakerActivation, TurnCues
from stream.voice.prosody import ProsodyReport

#: Activation at or above HIGH (at or below -HIGH) counts as high (low) activation.
HIGH = 0.33
#: A turn stands out when it is this far from the speaker's median activation.
STANDOUT = 0.4
#: Same-speaker segments closer than this make one turn for the activation estimate.
JOIN_GAP_S = 1.0
ACTIVATION_LABEL = "estimated vocal activation"
ACTIVATION_NOTE = (
    "How energised the voice sounds (-1 calm .. +1 activated), per turn of at least 0.8 s, "
    "from pitch range, spectral balance, energy range and speaking rate, blended with the "
    "speaker's own baseline as it forms. Not an emotion."
)


def speaker_label(number: int) -> str:
    """The default name of a diarized speaker."""
    return f"Speaker {number}"


@dataclass(frozen=True)
class Turn:
    """One speaker's uninterrupted turn (stream media time)."""

    start: float
    end: float
    speaker: int


@dataclass(frozen=True)
class VoiceTurn:
    """One turn of a speaker (same-speaker segments joined across short pauses) and its
    estimated vocal activation (None: shorter than 0.8 s or nothing measured)."""

    start: float
    end: float
    arousal: float | None

    def to_dict(self) -> dict[str, object]:
        a = None if self.arousal is None else round(self.arousal, 3)
        return {"start": round(self.start, 3), "end": round(self.end, 3), "arousal": a}


@dataclass(frozen=True)
class ActivationSummary:
    """A speaker's estimated vocal activation over its turns."""

    median: float | None
    high_share: float  # of the speaker's valued speech time at >= HIGH
    low_share: float  # ... at <= -HIGH
    standout: tuple[VoiceTurn, ...]  # turns far from the speaker's median, largest first

    @staticmethod
    def of(turns: list[VoiceTurn]) -> ActivationSummary:
        valued = [t for t in turns if t.arousal is not None]
        if not valued:
            return ActivationSummary(None, 0.0, 0.0, ())
        arousal = [t.arousal for t in valued if t.arousal is not None]
        time = sum(t.end - t.start for t in valued)
        med = float(np.median(arousal))
        high = sum(t.end - t.start for t in valued if (t.arousal or 0.0) >= HIGH)
        low = sum(t.end - t.start for t in valued if (t.arousal or 0.0) <= -HIGH)
        far = [t for t in valued if abs((t.arousal or 0.0) - med) >= STANDOUT]
        far.sort(key=lambda t: -abs((t.arousal or 0.0) - med))
        return ActivationSummary(med, high / time, low / time, tuple(far[:3]))

    def to_dict(self) -> dict[str, object]:
        return {
            "label": ACTIVATION_LABEL,
            "median": None if self.median is None else round(self.median, 3),
            "share_high": round(self.high_share, 3),
            "share_low": round(self.low_share, 3),
            "standout_turns": [t.to_dict() for t in self.standout],
            "note": ACTIVATION_NOTE,
        }


@dataclass(frozen=True)
class SpeakerStats(ProsodyMedians):
    """One diarized speaker over the stream."""

    number: int
    name: str
    speaking_s: float
    share: float
    turns: int
    face: int | None  # the linked face (mouth matching), None: never seen speaking
    face_share: float  # share of the speaker's matched speech time on that face
    voice_turns: tuple[VoiceTurn, ...] = ()
    activation: ActivationSummary = field(
        default_factory=lambda: ActivationSummary(None, 0.0, 0.0, ())
    )

    def to_dict(self, face_names: dict[int, str]) -> dict[str, object]:
        return {
            "id": self.number,
            "name": self.name,
            "speaking_s": round(self.speaking_s, 2),
            "share_of_speech": round(self.share, 4),
            "turns": self.turns,
            "face_id": self.face,
            "face_name": face_names.get(self.face) if self.face is not None else None,
            "face_link_share": round(self.face_share, 3),
            **self.prosody_dict(),
            "vocal_activation": self.activation.to_dict(),
            "voice_turns": [t.to_dict() for t in self.voice_turns],
        }

    def arousal_at(self, t: float) -> float | None:
        """The estimated activation of the speaker's turn covering media time `t`."""
        for turn in self.voice_turns:
            if turn.start <= t <= turn.end:
                return turn.arousal
        return None


@dataclass(frozen=True)
class SpeakersAnalysis:
    """Who spoke when (diarization) and how."""

    speakers: list[SpeakerStats]
    turns: list[Turn]
    speech_s: float
    method: str = "GE2E voice prints, spectral clustering (count by eigengap)"
    reports: dict[int, list[ProsodyReport]] = field(default_factory=dict)

    def at(self, t: float) -> int | None:
        """The speaker whose turn covers media time `t`."""
        for turn in self.turns:
            if turn.start <= t < turn.end:
                return turn.speaker
        return None

    def to_dict(self, face_names: dict[int, str]) -> dict[str, object]:
        return {
            "method": self.method,
            "speech_s": round(self.speech_s, 2),
            "count": len(self.speakers),
            "speakers": [s.to_dict(face_names) for s in self.speakers],
            "turns": [
                {"start_s": round(t.start, 3), "end_s": round(t.end, 3), "speaker": t.speaker}
                for t in self.turns
            ],
        }


def link_faces(
    pairs: list[tuple[int, int | None]], min_share: float
) -> dict[int, tuple[int | None, float]]:
    """Each speaker's face: the face most often matched while the speaker spoke, if it was
    matched for at least `min_share` of the speaker's speaking time; pairs are (speaker, face)
    per speaking report."""
    by: dict[int, Counter[int | None]] = {}
    for sp, face in pairs:
        by.setdefault(sp, Counter())[face] += 1
    out: dict[int, tuple[int | None, float]] = {}
    for sp, counts in by.items():
        total = sum(counts.values())
        faces = [(f, n) for f, n in counts.items() if f is not None]
        if not faces:
            out[sp] = (None, 0.0)
            continue
        face, n = max(faces, key=lambda x: x[1])
        share = n / total
        out[sp] = (face if share >= min_share else None, share)
    return out


def summarise_speakers(
    timeline: list[tuple[ProsodyReport, ActiveSpeaker]],
    segments: list[tuple[float, float, int]],
    hop_s: float,
    names: dict[int, str],
    min_share: float,
) -> SpeakersAnalysis:
    """Per-speaker summaries: speaking reports are given the speaker whose turn covers them.

    Args:
        timeline: prosody reports with their face matching (analysis clock).
        segments: diarized turns (start, end, global speaker number) on the same clock.
        hop_s: the prosody hop (one speaking report stands for hop_s of speech).
        names: speaker renames.
        min_share: face-link threshold (see `link_faces`).
    """
    segs = sorted(segments)
    starts = np.array([s[0] for s in segs])

    def who(t: float) -> int | None:
        i = int(np.searchsorted(starts, t, side="right")) - 1
        # A report stands for the window ending at t: look half a hop back as well.
        for j in (i, i - 1):
            if 0 <= j < len(segs) and segs[j][0] - hop_s / 2 <= t <= segs[j][1] + hop_s / 2:
                return segs[j][2]
        return None

    by: dict[int, list[ProsodyReport]] = {}
    pairs = []
    for report, active in timeline:
        if not report.speaking:
            continue
        sp = who(report.t)
        if sp is None:
            continue
        by.setdefault(sp, []).append(report)
        pairs.append((sp, active.face))
    links = link_faces(pairs, min_share)
    seg_time: dict[int, float] = {}
    seg_turns: dict[int, int] = {}
    prev: int | None = None
    for s, e, sp in segs:
        seg_time[sp] = seg_time.get(sp, 0.0) + (e - s)
        if sp != prev:  # a turn lasts until another speaker speaks (pauses do not end it)
            seg_turns[sp] = seg_turns.get(sp, 0) + 1
        prev = sp
    speech = sum(seg_time.values())

    stats = []
    for sp in sorted(seg_time):
        reps = by.get(sp, [])
        face, share = links.get(sp, (None, 0.0))
        scorer = SpeakerActivation()
        own = [r for r, _ in timeline if r.speaking]
        vturns = tuple(
            VoiceTurn(a, b, scorer.score(TurnCues.of(own, a, b)))
            for a, b in _join(segs, sp, JOIN_GAP_S)
        )
        stats.append(
            SpeakerStats(
                number=sp,
                name=names.get(sp) or speaker_label(sp),
                speaking_s=seg_time[sp],
                share=seg_time[sp] / speech if speech else 0.0,
                turns=seg_turns[sp],
                face=face,
                face_share=share,
                voice_turns=vturns,
                activation=ActivationSummary.of(list(vturns)),
                **ProsodyMedians.of(reps),
            )
        )
    turns = [Turn(s, e, sp) for s, e, sp in segs]
    return SpeakersAnalysis(stats, turns, speech, reports=by)


def _join(
    segs: list[tuple[float, float, int]], speaker: int, gap: float
) -> list[tuple[float, float]]:
    """The speaker's segments (all segments in time order), joined where the speaker goes on
    after a pause shorter than `gap` with nobody else speaking in between."""
    out: list[tuple[float, float]] = []
    prev: int | None = None
    for a, b, sp in segs:
        if sp == speaker:
            if out and prev == speaker and a - out[-1][1] < gap:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        prev = sp
    return out
