"""A stream's diarized speakers across its audio tracks: numbers, names and links to faces.

Each audio track's diarizer numbers its own speakers 1, 2, ...; the stream numbers every
(track, speaker) pair in order of appearance, so "Speaker 2" means the same voice everywhere
(events, summaries, reports) and two tracks never share a number.
"""

from __future__ import annotations

from collections.abc import Callable

from stream.analysis.speakers import speaker_label
from stream.voice.diarize import Diarizer

#: A diarized turn on the analysis clock: (start s, end s, stream-wide speaker number).
Turn = tuple[float, float, int]
#: Live face links: a voice counts as a face's after this many matched reports.
MIN_LINK_REPORTS = 4


class Voices:
    """The stream-wide numbers, names and face links of diarized speakers.

    Args:
        link_min_share: the share of a voice's speech matched to one face that links them.
    """

    def __init__(self, link_min_share: float) -> None:
        if not 0 < link_min_share <= 1:
            raise ValueError(f"link_min_share must be in (0, 1], got {link_min_share}")
        self.link_min_share = link_min_share
        self.names: dict[int, str] = {}
        self._ids: dict[tuple[str, int], int] = {}  # (track, diarizer ID) -> stream number
        self._links: dict[int, dict[int | None, int]] = {}  # voice -> face -> reports

    def number(self, track: str, local: int) -> int:
        """The stream-wide number of a track's diarized speaker (numbered as they appear)."""
        key = (track, local)
        if key not in self._ids:
            self._ids[key] = len(self._ids) + 1
        return self._ids[key]

    def track_of(self, voice: int) -> str | None:
        """The audio track a stream-wide speaker number belongs to."""
        return next((track for (track, _), n in self._ids.items() if n == voice), None)

    def heard(self, voice: int, face: int | None) -> int | None:
        """Count one report of `voice` matched to `face` (None: no face); returns the face the
        voice is linked to so far."""
        counts = self._links.setdefault(voice, {})
        counts[face] = counts.get(face, 0) + 1
        return self.face_of(voice)

    def face_of(self, voice: int) -> int | None:
        """The face a diarized speaker is linked to so far (live), None: not (yet) seen."""
        counts = self._links.get(voice, {})
        total = sum(counts.values())
        faces = [(f, n) for f, n in counts.items() if f is not None]
        if not faces or total < MIN_LINK_REPORTS:
            return None
        face, n = max(faces, key=lambda x: x[1])
        return face if n / total >= self.link_min_share else None

    def name(self, voice: int) -> str:
        return self.names.get(voice) or speaker_label(voice)

    def rename(self, voice: int, name: str) -> None:
        self.names[voice] = name

    def reset(self) -> None:
        self.names.clear()
        self._ids.clear()
        self._links.clear()

    def turns(self, track: str, diarizer: Diarizer, offset: float, online: bool) -> list[Turn]:
        """One track's diarized turns on the analysis clock with stream-wide numbers.

        Files (`online` False): clustered over the whole recording. Live: the online IDs'
        windows (the recent ones), so the numbers match the events sent.
        """
        if not online:
            return [
                (s.start + offset, s.end + offset, self.number(track, s.speaker))
                for s in diarizer.segments()
            ]
        spans = [(w.start + offset, w.end + offset, w.stable) for w in diarizer.windows if w.stable]
        return merge_windows(spans, lambda local: self.number(track, local))


def merge_windows(spans: list[Turn], number: Callable[[int], int]) -> list[Turn]:
    """One track's overlapping online windows (local speaker IDs) -> turns with the numbers
    `number` gives: each window's second half goes to the next one."""
    spans = sorted(spans)
    out: list[Turn] = []
    for i, (s, e, local) in enumerate(spans):
        end = min(e, spans[i + 1][0] + (e - spans[i + 1][0]) / 2) if i + 1 < len(spans) else e
        start = out[-1][1] if out and out[-1][1] > s else s
        sid = number(local)
        if out and out[-1][2] == sid and start - out[-1][1] < 0.3:
            out[-1] = (out[-1][0], max(end, out[-1][1]), sid)
        elif end > start:
            out.append((start, end, sid))
    return out
