"""Per-speaker voice analysis: audio frames in, voice activity and prosody reports out.

Chain: any PyAV audio frame (live 48 kHz Opus frames of any size, or decoded file audio) ->
48 kHz mono float -> automatic gain (quiet recordings reach the models at a working level) ->
DeepFilterNet3 (optional) -> 16 kHz -> Silero VAD + CREPE pitch + energy (the gain taken off
again: energies are the recording's own level) -> rolling-window prosody.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import av
import numpy as np

from stream.core.config import AudioConfig
from stream.core.types import F32
from stream.models.runtime import SessionFactory
from stream.voice.denoise import DeepFilter
from stream.voice.level import LevelNormaliser, Retention
from stream.voice.pitch import CrepePitch
from stream.voice.prosody import HopFeatures, ProsodyReport, ProsodyWindow
from stream.voice.resample import Resampler, array_frame
from stream.voice.vad import CHUNK, SileroVad, VadStep

DF_DELAY_S = 0.03  # DeepFilterNet3's algorithmic delay
HOLD_MARGIN_DB = 5.0  # retention may fall this much further once speech has started
ENERGY_HOP_S = 0.02  # energy (and prosody hop) spacing; pitch may be sparser


@dataclass(frozen=True)
class VoiceUpdate:
    """What one chunk of audio produced (times in seconds of the speaker's stream)."""

    steps: list[VadStep]
    hops: list[HopFeatures]
    reports: list[ProsodyReport]
    #: the original (not denoised) 16 kHz audio of this chunk, for speaker embeddings: the
    #: denoiser changes voices enough that voice prints no longer tell speakers apart (measured
    #: on the pyannote sample: 1 speaker and DER 46% from denoised audio, 2 and 5.1% without)
    audio16k: F32 = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass
class _Pitch:
    """A pitch frame centred at `t`: estimated (f0 Hz, confidence) once a speech hop needs it."""

    t: float
    frame: F32
    f0: float = 0.0
    conf: float = 0.0
    todo: bool = True


@dataclass(frozen=True)
class Prepared:
    """The chain's first half for a chunk (gain, denoiser), made by `prepare` and read in order
    by `finish`: the two halves share no state, so they may run on two threads."""

    samples: F32  # the chunk as fed (48 kHz)
    scaled: F32  # with the gain applied (whole 10 ms frames)
    clean: F32  # denoised (the scaled audio when not denoising)
    gains: list[tuple[float, float]]  # (stream time, gain dB) per 10 ms frame scaled


class VoiceAnalyzer:
    """Analyses one speaker's audio stream. Not thread-safe: one instance per stream.

    Args:
        factory: shares the VAD and pitch model sessions between speakers.
        config: window, hop, VAD thresholds, denoising.
    """

    def __init__(
        self,
        factory: SessionFactory,
        config: AudioConfig | None = None,
        vad_model: str = "silero_vad_v6",
        pitch_model: str = "crepe_tiny_pitch",
    ) -> None:
        self.config = s = config or AudioConfig()
        self.to48k = Resampler(48_000)
        self.to16k = Resampler(16_000)
        self.raw16k = Resampler(16_000)  # voice prints read the audio before denoising
        self._raw = np.zeros(0, np.float32)
        self.level = LevelNormaliser(48_000, s.agc_target_db, s.agc_max_gain_db)
        self.denoiser = DeepFilter(s.atten_lim_db) if s.denoise else None
        self.vad = SileroVad(factory.get(vad_model), s.vad_on, s.vad_off, s.vad_hangover_s)
        self.pitch = CrepePitch(factory.get(pitch_model), s.pitch_hop_s)
        self.window = ProsodyWindow(s.window_s, s.hop_s)
        self.offset = DF_DELAY_S if self.denoiser is not None else 0.0
        self.retention = Retention(self.denoiser.frame) if self.denoiser is not None else None
        self.min_retention_db = s.min_retention_db
        self._audio = np.zeros(0, np.float32)  # recent 16 kHz audio for energy
        self._audio_t0 = 0.0
        self._vad: deque[VadStep] = deque()  # decisions not yet older than every pending hop
        self._pitch: deque[_Pitch] = deque()  # pitch frames not yet behind every hop
        # (t, dBFS, spectral tilt dB) waiting for VAD and pitch
        self._energy: deque[tuple[float, float, float]] = deque()
        self._next_energy_t = 0.0

    def feed(self, frame: av.AudioFrame | None) -> VoiceUpdate:
        """Feed one audio frame (None flushes the resamplers at the end of a file)."""
        return self.feed48k(self.to48k(frame))

    def feed_many(self, frames: list[av.AudioFrame | None]) -> VoiceUpdate:
        """Feed several frames at once: the models then run on batches (cheaper per second)."""
        return self.finish(self.prepare(frames))

    def feed48k(self, samples: F32) -> VoiceUpdate:
        """Feed 48 kHz mono float32 samples."""
        return self.finish(self.prepare48k(samples))

    def prepare(self, frames: list[av.AudioFrame | None]) -> Prepared | None:
        """The first half of `feed_many` (None: no frames)."""
        if not frames:
            return None
        return self.prepare48k(np.concatenate([self.to48k(f) for f in frames]))

    def prepare48k(self, samples: F32) -> Prepared:
        """The first half of `feed48k`: gain and denoiser (the chain's costliest part)."""
        scaled, gains = self.level.scale(samples)
        clean = self.denoiser.process(scaled) if self.denoiser is not None else scaled
        return Prepared(samples, scaled, clean, gains)

    def finish(self, prepared: Prepared | None) -> VoiceUpdate:
        """The second half of `feed_many`: retention, 16 kHz resampling, VAD, pitch, energy,
        prosody (on `prepare`'s results, in their order)."""
        if prepared is None:
            return VoiceUpdate([], [], [])
        samples, scaled, clean = prepared.samples, prepared.scaled, prepared.clean
        self.level.record(prepared.gains)
        if self.retention is not None:
            self.retention.add(scaled, clean)
        if self.denoiser is not None and len(samples):
            self._raw = np.concatenate([self._raw, self.raw16k(array_frame(samples, 48_000))])
        if len(clean) == 0:
            return VoiceUpdate([], [], [])
        s16 = self.to16k(array_frame(clean, 48_000))
        steps = self.vad.process(s16, self._foreground if self.retention is not None else None)
        self._vad.extend(steps)
        self._audio = np.concatenate([self._audio, s16])
        times, frames = self.pitch.frames(s16)
        self._pitch.extend(_Pitch(t, f) for t, f in zip(times.tolist(), frames, strict=True))
        # Energy every ENERGY_HOP_S (finer than pitch: syllable peaks need it), on audio that
        # is still in the buffer.
        end_t = self._audio_t0 + len(self._audio) / 16000
        while self._next_energy_t + ENERGY_HOP_S / 2 <= end_t:
            t = self._next_energy_t
            gain = self.level.gain_db_at(t - self.offset)
            energy, tilt = self._energy_tilt(t)
            self._energy.append((t, energy - gain, tilt))
            self._next_energy_t = round(t + ENERGY_HOP_S, 6)
        self._trim_audio()
        # Each hop takes the pitch frame nearest to it; frames are estimated only for speech
        # hops (prosody reads pitch only there), all of a call's in one model run.
        due: list[tuple[float, float, float, VadStep | None, _Pitch]] = []
        vad_end = self._vad[-1].t + CHUNK / 16000 if self._vad else -1.0
        pitch_end = self._pitch[-1].t if self._pitch else -1.0
        while self._energy and self._energy[0][0] < vad_end and self._energy[0][0] <= pitch_end:
            t, energy, tilt = self._energy.popleft()
            while len(self._pitch) > 1 and abs(self._pitch[1].t - t) <= abs(self._pitch[0].t - t):
                self._pitch.popleft()  # keep the pitch frame nearest to t in front
            due.append((t, energy, tilt, self._step_at(t), self._pitch[0]))
        todo: list[_Pitch] = []
        for *_, step, p in due:
            if step is not None and step.speech and p.todo:
                p.todo = False
                todo.append(p)
        if todo:
            f0, conf = self.pitch.estimate(np.stack([p.frame for p in todo]))
            for p, hz, c in zip(todo, f0.tolist(), conf.tolist(), strict=True):
                p.f0, p.conf = hz, c
        hops = []
        for t, energy, tilt, step, p in due:
            speech = step.speech if step else False
            hz, c = (p.f0, p.conf) if speech else (0.0, 0.0)
            hops.append(
                HopFeatures(
                    t - self.offset, energy, hz, c, speech, step.prob if step else 0.0, tilt
                )
            )
        keep_from = (self._energy[0][0] if self._energy else vad_end) - 0.1
        while len(self._vad) > 1 and self._vad[1].t <= keep_from:
            self._vad.popleft()
        shifted = [VadStep(v.t - self.offset, v.prob, v.speech) for v in steps]
        voice16, self._raw = (
            (s16, self._raw) if self.denoiser is None else (self._raw, self._raw[:0])
        )
        return VoiceUpdate(shifted, hops, self.window.add(hops), voice16)

    def _foreground(self, t: float) -> bool:
        """Whether the denoiser kept enough of the sound up to `t` for it to be foreground:
        `min_retention_db` to start speech, 10 dB less to hold it (quiet syllables and
        breaths inside speech in a noisy room keep less)."""
        assert self.retention is not None
        hold = HOLD_MARGIN_DB if self.vad.speaking else 0.0
        return self.retention.at(t) >= self.min_retention_db - hold

    def _trim_audio(self) -> None:
        extra = len(self._audio) - 16000 * 2
        if extra > 0:
            self._audio = self._audio[extra:]
            self._audio_t0 += extra / 16000

    def _energy_tilt(self, t: float) -> tuple[float, float]:
        """Energy (dBFS) of the 20 ms around `t`, and its spectral balance: the energy of
        1-5 kHz over that of 50 Hz-1 kHz in dB (the alpha ratio; a pressed, loud voice puts
        more energy high). Both on the audio as the models see it (the gain not yet removed)."""
        c = round((t - self._audio_t0) * 16000)
        seg = self._audio[max(0, c - 160) : max(0, c + 160)].astype(np.float64)
        if len(seg) == 0:
            return -100.0, 0.0
        energy = float(10 * np.log10(max(float(np.mean(seg**2)), 1e-10)))
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 320)) ** 2  # 50 Hz bins
        low, high = float(spec[1:20].sum()), float(spec[20:101].sum())
        return energy, float(10 * np.log10(max(high, 1e-12) / max(low, 1e-12)))

    def _step_at(self, t: float) -> VadStep | None:
        """The VAD decision covering time `t` (chunks are 32 ms, in order)."""
        if not self._vad or t < self._vad[0].t:
            return None
        i = min(int((t - self._vad[0].t) / (CHUNK / 16000)), len(self._vad) - 1)
        return self._vad[i]
