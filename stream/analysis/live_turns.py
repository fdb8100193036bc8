"""Speech turns of live audio tracks, each with its estimated vocal activation.

Files get turns from diarization at the end; a live track gets them as they finish: a turn is a
run of speaking prosody reports, ended by a pause longer than `gap_s`, a change of diarized voice,
or `max_s` of speech (a long monologue is sent in parts). Each turn is scored like a file's
(`SpeakerActivation`: absolute cues, then the track's own baseline as it forms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.analysis.voice import SpeakerUpdate
from stream.voice.activation import SpeakerActivation, TurnCues
from stream.voice.prosody import ProsodyReport


@dataclass(frozen=True)
class LiveTurn:
    """A finished speech turn of one audio track (times on the track's prosody clock)."""

    speaker: str
    start: float
    end: float
    activation: float | None  # estimated vocal activation, -1..1; None under 0.8 s of speech
    face: int | None  # the face matched most often during the turn (None: not visible)
    voice_id: int | None  # the diarized voice (None: not diarized)


@dataclass
class _Open:
    start: float
    end: float
    voice_id: int | None
    reports: list[ProsodyReport] = field(default_factory=list)
    faces: dict[int, int] = field(default_factory=dict)


class LiveTurns:
    """Turns of every live audio track, from their prosody updates.

    Args:
        hop_s: the prosody hop (a turn starts one hop before its first speaking report).
        gap_s: a pause longer than this ends a turn.
        max_s: a turn longer than this is sent in parts.
    """

    def __init__(self, hop_s: float, gap_s: float = 0.5, max_s: float = 10.0) -> None:
        if hop_s <= 0 or gap_s < 0 or max_s <= 0:
            raise ValueError(f"hop_s and max_s must be > 0, gap_s >= 0: {hop_s}, {gap_s}, {max_s}")
        self.hop_s, self.gap_s, self.max_s = hop_s, gap_s, max_s
        self._open: dict[str, _Open] = {}
        self._scores: dict[str, SpeakerActivation] = {}

    def add(self, u: SpeakerUpdate) -> list[LiveTurn]:
        """Feed one update; returns the turn it finished (if any)."""
        r, cur, done = u.report, self._open.get(u.speaker), []
        if cur is not None and (
            r.t - cur.end > self.gap_s
            or (r.speaking and u.voice_id != cur.voice_id)
            or cur.end - cur.start >= self.max_s
        ):
            done.append(self._close(u.speaker))
            cur = None
        if not r.speaking:
            return done
        if cur is None:
            cur = self._open[u.speaker] = _Open(r.t - self.hop_s, r.t, u.voice_id)
        cur.end = r.t
        cur.reports.append(r)
        if u.active.face is not None:
            cur.faces[u.active.face] = cur.faces.get(u.active.face, 0) + 1
        return done

    def flush(self) -> list[LiveTurn]:
        """Finish every open turn (the session ends)."""
        return [self._close(speaker) for speaker in list(self._open)]

    def reset(self) -> None:
        """Forget open turns and the tracks' baselines."""
        self._open.clear()
        self._scores.clear()

    def _close(self, speaker: str) -> LiveTurn:
        t = self._open.pop(speaker)
        cues = TurnCues.of(t.reports, t.start, t.end)
        activation = self._scores.setdefault(speaker, SpeakerActivation()).score(cues)
        face = max(t.faces, key=lambda f: t.faces[f]) if t.faces else None
        return LiveTurn(speaker, t.start, t.end, activation, face, t.voice_id)
