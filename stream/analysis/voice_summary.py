"""Voices of a recording: per-face prosody summaries from the attributed report timeline."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from stream.analysis.speaker import ActiveSpeaker
from stream.core.notices import VOICE_NOTICE, face_name
from stream.voice.prosody import ProsodyReport


def _median(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def _round(x: float | None, n: int = 2) -> float | None:
    return None if x is None else round(x, n)


@dataclass(frozen=True)
class ProsodyMedians:
    """A speaker's prosody: medians over its speech reports (None where none was measured)."""

    f0_median_hz: float | None
    f0_range_st: float | None
    energy_dbfs: float | None
    rate_per_s: float | None
    vocal_arousal_heuristic: float | None

    @staticmethod
    def of(reports: list[ProsodyReport]) -> dict[str, float | None]:
        """The medians of `reports`, as keyword arguments of a subclass."""
        return {
            "f0_median_hz": _median([r.f0_median_hz for r in reports]),
            "f0_range_st": _median([r.f0_range_st for r in reports]),
            "energy_dbfs": _median([r.energy_dbfs for r in reports]),
            "rate_per_s": _median([r.rate_per_s for r in reports]),
            "vocal_arousal_heuristic": _median([r.vocal_arousal_heuristic for r in reports]),
        }

    def prosody_parts(self) -> list[str]:
        """The measured prosody for a terminal line ("pitch 194 Hz", "energy -34 dBFS", ...)."""
        parts = []
        if self.f0_median_hz is not None:
            parts.append(f"pitch {self.f0_median_hz:.0f} Hz")
        if self.energy_dbfs is not None:
            parts.append(f"energy {self.energy_dbfs:.0f} dBFS")
        if self.rate_per_s is not None:
            parts.append(f"rate {self.rate_per_s:.1f}/s")
        return parts

    def prosody_dict(self) -> dict[str, float | None]:
        return {
            "pitch_median_hz": _round(self.f0_median_hz, 1),
            "pitch_range_st": _round(self.f0_range_st),
            "energy_dbfs": _round(self.energy_dbfs, 1),
            "speaking_rate_per_s": _round(self.rate_per_s),
            "vocal_arousal_heuristic": _round(self.vocal_arousal_heuristic),
        }


@dataclass(frozen=True)
class SpeakerSummary(ProsodyMedians):
    """Voice of one face over a recording (only the time it was matched as the speaker)."""

    number: int
    speaking_s: float
    share: float  # of all speech time in the recording

    def to_dict(self, name: str) -> dict[str, object]:
        return {
            "id": self.number,
            "name": name,
            "speaking_s": round(self.speaking_s, 2),
            "share_of_speech": round(self.share, 4),
            **self.prosody_dict(),
        }


@dataclass(frozen=True)
class VoiceAnalysis:
    """Voices of a recording: who spoke when, and each speaker's prosody."""

    denoised: bool
    hop_s: float
    speech_s: float
    unattributed_s: float
    speakers: list[SpeakerSummary]
    timeline: list[tuple[ProsodyReport, ActiveSpeaker]]

    def at(self, t: float) -> tuple[ProsodyReport, ActiveSpeaker] | None:
        """The report covering media time `t` (the first report at or after it, within a hop)."""
        times = self._times
        i = int(np.searchsorted(times, t))
        if i < len(times) and times[i] - t <= self.hop_s:
            return self.timeline[i]
        return None

    @cached_property
    def _times(self) -> npt.NDArray[np.float64]:
        """The reports' times, made once (`at` runs for every CSV row: O(log n), not O(n))."""
        return np.array([r.t for r, _ in self.timeline], np.float64)

    def to_dict(self, names: dict[int, str]) -> dict[str, object]:
        return {
            "denoised": self.denoised,
            "speech_s": round(self.speech_s, 2),
            "unattributed_speech_s": round(self.unattributed_s, 2),
            "speakers": [
                s.to_dict(names.get(s.number) or face_name(s.number)) for s in self.speakers
            ],
            "notice": VOICE_NOTICE,
        }


def summarise_voice(
    timeline: list[tuple[ProsodyReport, ActiveSpeaker]], hop_s: float, denoised: bool
) -> VoiceAnalysis:
    """Per-face prosody summaries from the attributed report timeline."""
    speaking = [(r, a) for r, a in timeline if r.speaking]
    speech_s = len(speaking) * hop_s
    by_face: dict[int, list[ProsodyReport]] = {}
    for r, a in speaking:
        if a.face is not None:
            by_face.setdefault(a.face, []).append(r)

    speakers = [
        SpeakerSummary(
            number=face,
            speaking_s=len(reps) * hop_s,
            share=len(reps) * hop_s / speech_s if speech_s else 0.0,
            **ProsodyMedians.of(reps),
        )
        for face, reps in sorted(by_face.items())
    ]
    attributed = sum(s.speaking_s for s in speakers)
    return VoiceAnalysis(denoised, hop_s, speech_s, speech_s - attributed, speakers, timeline)
