"""Participants: a face and the voice linked to it are one person; unlinked faces and voices
stay participants of their own."""

from __future__ import annotations

from dataclasses import dataclass

from stream.analysis.aggregate import FaceSummary
from stream.analysis.speakers import SpeakersAnalysis, SpeakerStats
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
