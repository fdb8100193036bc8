"""Speakers of a stream: diarized voices ("Speaker 1", ...), their turns and prosody, and the
face each one is linked to by mouth matching (speakers never matched keep their own ID)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from stream.analysis.speaker import ActiveSpeaker
from stream.analysis.voice_summary import ProsodyMedians
from stream.voice.prosody import ProsodyReport


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
class SpeakerStats(ProsodyMedians):
    """One diarized speaker over the stream."""

    number: int
    name: str
    speaking_s: float
    share: float
    turns: int
    face: int | None  # the linked face (mouth matching), None: never seen speaking
    face_share: float  # share of the speaker's matched speech time on that face

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
        }


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
        stats.append(
            SpeakerStats(
                number=sp,
                name=names.get(sp) or speaker_label(sp),
                speaking_s=seg_time[sp],
                share=seg_time[sp] / speech if speech else 0.0,
                turns=seg_turns[sp],
                face=face,
                face_share=share,
                **ProsodyMedians.of(reps),
            )
        )
    turns = [Turn(s, e, sp) for s, e, sp in segs]
    return SpeakersAnalysis(stats, turns, speech, reports=by)
