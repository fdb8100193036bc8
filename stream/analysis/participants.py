"""Participants: a face and the voice linked to it are one person; unlinked faces and voices
stay participants of their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.analysis.aggregate import FaceSummary
from stream.analysis.speakers import HIGH, ActivationSummary, SpeakersAnalysis, SpeakerStats
from stream.analysis.voice_summary import VoiceAnalysis
from stream.core.notices import face_name


@dataclass(frozen=True)
class Participant:
    """One person as far as the analysis can tell: a face, a voice, or both linked."""

    face: FaceSummary | None
    speaker: SpeakerStats | None

    @property
    def name(self) -> str:
        if self.face is not None:
            return self.face.name or face_name(self.face.number)
        assert self.speaker is not None
        return self.speaker.name

    @property
    def start(self) -> float:
        """When the participant was first seen or heard (orders the list)."""
        times = []
        if self.face is not None:
            times.append(self.face.first_seen)
        if self.speaker is not None and self.speaker.voice_turns:
            times.append(self.speaker.voice_turns[0].start)
        return min(times) if times else 0.0

    def to_dict(self) -> dict[str, object]:
        f, s = self.face, self.speaker
        return {
            "name": self.name,
            "face_id": f.number if f is not None else None,
            "face_name": (f.name or face_name(f.number)) if f is not None else None,
            "speaker_id": s.number if s is not None else None,
            "speaker_name": s.name if s is not None else None,
            "visible_s": round(f.visible_s, 2) if f is not None else None,
            "speaking_s": round(s.speaking_s, 2) if s is not None else None,
            "expression": (
                {
                    "dominant": f.dominant,
                    "share": round(f.dominant_share, 4),
                    "uncertain_share": round(f.uncertain_share, 4),
                    "note": "facial expression shown, not a feeling",
                }
                if f is not None
                else None
            ),
            "vocal_activation": s.activation.to_dict() if s is not None else None,
        }


def participants(faces: list[FaceSummary], speakers: SpeakersAnalysis | None) -> list[Participant]:
    """Faces with their linked voice (if any), then voices no face is linked to, each in
    order of first appearance."""
    voices = list(speakers.speakers) if speakers is not None else []
    known = {f.number for f in faces}
    linked: dict[int, SpeakerStats] = {}
    for s in sorted(voices, key=lambda s: -s.speaking_s):  # two voices on one face: the longer
        if s.face is not None and s.face in known and s.face not in linked:
            linked[s.face] = s
    people = [Participant(f, linked.get(f.number)) for f in faces]
    taken = {s.number for s in linked.values()}
    people += [Participant(None, s) for s in voices if s.number not in taken]
    return sorted(people, key=lambda p: p.start)


def live_participants(
    faces: list[FaceSummary], voice: VoiceAnalysis | None, speakers: SpeakersAnalysis | None
) -> list[dict[str, Any]]:
    """Participants of a live session, as in the file JSON's `participants[]`.

    With diarized voices (`diarization.live`) exactly as files. Without, a live audio track has
    no speaker IDs: the speech matched to a face's mouth is that face's voice (speaking time
    and vocal activation summary of its prosody windows; no standout turns), and speaker
    fields stay null.
    """
    if speakers is not None or voice is None:
        return [p.to_dict() for p in participants(faces, speakers)]
    windows: dict[int, list[float]] = {}
    for r, a in voice.timeline:
        if r.speaking and a.face is not None and r.activation is not None:
            windows.setdefault(a.face, []).append(r.activation)
    spoken = {s.number: s for s in voice.speakers}
    out = []
    for f in faces:
        d = Participant(f, None).to_dict()
        s = spoken.get(f.number)
        if s is not None:
            d["speaking_s"] = round(s.speaking_s, 2)
            act = np.asarray(windows.get(f.number, []), np.float64)
            summary = (
                ActivationSummary(
                    float(np.median(act)),
                    float(np.mean(act >= HIGH)),
                    float(np.mean(act <= -HIGH)),
                    (),
                )
                if act.size
                else ActivationSummary(None, 0.0, 0.0, ())
            )
            d["vocal_activation"] = summary.to_dict()
        out.append(d)
    return out
