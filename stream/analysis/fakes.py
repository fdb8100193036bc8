"""Deterministic fake stages with the real interfaces: a whole stream analysed in milliseconds.

`FakeStages` is a `StageSource` whose models read synthetic media drawn by `fake_frames` and
`fake_audio_frames`; nothing is loaded. Only the models are fake: the real `VisionPipeline`,
identity tracker (geometry, re-identification, numbering), smoothing, mouths, facial-action
scheduling, voice prosody windows and the diarizer run on their outputs.

- Faces are coloured, banded rectangles on a dark background; a face's colour (and bands) is
  who it is (`PALETTE` index). The detector finds bright connected regions; the embedder maps
  the colour of the aligned crop to a unit vector (the same person: similarity ~1, another: ~0); the
  expression model's label follows the colour too (`expected_label`).
- A face's mouth is a dark bar whose height is its openness: mouths move when it changes, and
  the fake facial-action model reports it as `jawOpen`.
- Voices are tones: the fake voice chain calls audio above `SPEECH_DBFS` speech (energy VAD)
  and its pitch is the dominant frequency; the fake voice print is the normalised mel
  spectrum, so tones of different frequencies are different speakers.

    stages = FakeStages(config)
    analysis = StreamAnalysis(stages, fps=10)
    for frame in fake_frames(20, [FakeFace(0, (40, 40, 120, 130))]):
        analysis.push_video(frame)
"""

from __future__ import annotations

import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from stream.core.config import Config
from stream.core.labels import LABELS, estimate_valence_arousal
from stream.core.types import F32, U8, EmotionScores, FaceDetections, VideoFrame
from stream.vision.blendshapes import BLENDSHAPES, INDEX, FacialActions
from stream.vision.headpose import CanonicalFace
from stream.vision.pipeline import VisionPipeline, face_actions
from stream.vision.signals import BehaviourSignals
from stream.vision.smoothing import ExpressionSmoother
from stream.vision.tracker import IdentityTracker, Numbering
from stream.voice.analyzer import ENERGY_HOP_S, VoiceUpdate
from stream.voice.prosody import HopFeatures, ProsodyWindow
from stream.voice.resample import Resampler
from stream.voice.vad import CHUNK, VadStep

#: Face colours (BGR); a face's index in this list is its identity.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 230),  # red
    (40, 200, 40),  # green
    (230, 80, 40),  # blue
    (40, 220, 230),  # yellow
    (220, 40, 220),  # magenta
    (230, 220, 40),  # cyan
    (230, 230, 230),  # white
    (40, 130, 240),  # orange
)
BACKGROUND = 12  # grey level of the frame around the faces
#: Where the fake detector puts the five landmarks, as fractions of the box (x, y).
LANDMARKS = np.array(
    [[0.32, 0.38], [0.68, 0.38], [0.5, 0.55], [0.36, 0.75], [0.64, 0.75]], np.float32
)
#: The labels the fake expression model supports (contempt is not, as with 7-class models).
SUPPORTED = np.array([lab != "contempt" for lab in LABELS], dtype=bool)
SPEECH_DBFS = -40.0  # the fake VAD's energy threshold
_RATE = 16_000
_SIGMA = 45.0  # colour distance scale of the fake embedding


@dataclass(frozen=True)
class FakeFace:
    """A face to draw: who (a `PALETTE` index), where (pixels x1, y1, x2, y2) and how open its
    mouth is (0 closed .. 1 wide)."""

    person: int
    box: tuple[int, int, int, int]
    mouth: float = 0.0


def expected_label(person: int) -> str:
    """The expression the fake model sees on a person's face."""
    labels = [lab for lab, s in zip(LABELS, SUPPORTED, strict=True) if s]
    return labels[person % len(labels)]


def draw_faces(image: U8, faces: Sequence[FakeFace]) -> U8:
    """Draw faces onto a BGR image (in place; returned for chaining)."""
    for f in faces:
        colour = PALETTE[f.person % len(PALETTE)]
        x1, y1, x2, y2 = f.box
        image[y1:y2, x1:x2] = colour
        dim = tuple(c // 2 for c in colour)
        w, h = x2 - x1, y2 - y1
        # Bands of the person's own count and direction: the tracker's appearance check reads
        # grey thumbnails, so who it is must show without colour too.
        bands = 2 + f.person % 4
        for k in range(1, 2 * bands, 2):
            if (f.person // 4) % 2 == 0:
                image[y1 + k * h // (2 * bands) : y1 + (k + 1) * h // (2 * bands), x1:x2] = dim
            else:
                image[y1:y2, x1 + k * w // (2 * bands) : x1 + (k + 1) * w // (2 * bands)] = dim
        for y in range(y1 + 2, y2, 5):  # fine stripes: texture (sharpness)
            image[y, x1:x2] = image[y, x1:x2] // 4 * 3
        cx, cy = x1 + w // 2, y1 + round(0.75 * h)
        half_w, half_h = max(1, round(0.14 * w)), max(1, round(0.08 * h * f.mouth))
        if f.mouth > 0:
            image[cy - half_h : cy + half_h, cx - half_w : cx + half_w] = 30
    return image


def fake_frames(
    n: int,
    faces: Sequence[FakeFace] | Callable[[int], Sequence[FakeFace]],
    fps: float = 10.0,
    size: tuple[int, int] = (320, 240),
    start: float = 0.0,
) -> list[VideoFrame]:
    """`n` frames at `fps` (media time from `start`) showing `faces` (the same on every frame,
    or a function of the frame index)."""
    w, h = size
    out = []
    for i in range(n):
        image = np.full((h, w, 3), BACKGROUND, np.uint8)
        draw_faces(image, faces(i) if callable(faces) else faces)
        out.append(VideoFrame(image, start + i / fps, i))
    return out


def tone(seconds: float, hz: float, level_db: float = -20.0, rate: int = 48_000) -> F32:
    """A fake voice at `level_db` dBFS RMS: a tone around `hz` with a slow vibrato of 3 %
    (a voice is never the same twice: identical voice prints would give the diarizer's
    clustering only ties)."""
    t = np.arange(round(seconds * rate)) / rate
    amp = math.sqrt(2) * 10 ** (level_db / 20)
    phase = 2 * np.pi * hz * (t - 0.03 / (2 * np.pi * 0.7) * np.cos(2 * np.pi * 0.7 * t))
    return (amp * np.sin(phase)).astype(np.float32)


def fake_audio(
    turns: Sequence[tuple[float, float, float]], seconds: float, rate: int = 48_000
) -> F32:
    """Mono samples: silence with tones (start s, end s, frequency Hz)."""
    out = np.zeros(round(seconds * rate), np.float32)
    for start, end, hz in turns:
        a, b = round(start * rate), min(round(end * rate), len(out))
        out[a:b] = tone((b - a) / rate, hz, rate=rate)
    return out


def fake_audio_frames(
    samples: F32 | Sequence[tuple[float, float, float]],
    seconds: float | None = None,
    rate: int = 48_000,
    frame_s: float = 0.02,
) -> list[av.AudioFrame]:
    """PyAV mono frames of `frame_s` each (as a WebRTC track delivers them) of the samples, or
    of `fake_audio(turns, seconds)`."""
    if not isinstance(samples, np.ndarray):
        if seconds is None:
            seconds = max((e for _, e, _ in samples), default=0.0)
        samples = fake_audio(samples, seconds, rate)
    step = round(frame_s * rate)
    out = []
    for i in range(0, len(samples), step):
        chunk = np.ascontiguousarray(samples[i : i + step], np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(chunk, "flt", "mono")
        frame.sample_rate = rate
        out.append(frame)
    return out


# -- vision ----------------------------------------------------------------------------------
class FakeDetector:
    """Finds the bright rectangles of `draw_faces`: connected regions above the background."""

    def __init__(self, min_side: int = 16) -> None:
        self.min_side = min_side

    def __call__(self, frame: VideoFrame) -> FaceDetections:
        mask = (frame.image.max(axis=2) > BACKGROUND + 20).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        boxes = []
        for x, y, w, h, _area in stats[1:n]:
            if min(w, h) >= self.min_side:
                boxes.append((x, y, x + w, y + h))
        if not boxes:
            return FaceDetections.empty()
        b = np.array(boxes, np.float32)
        wh = b[:, 2:] - b[:, :2]
        landmarks = b[:, None, :2] + LANDMARKS[None] * wh[:, None, :]
        return FaceDetections(b, np.full(len(b), 0.95, np.float32), landmarks.astype(np.float32))


def _person(bgr: npt.NDArray[np.float64]) -> int:
    """The palette index nearest a colour."""
    d = np.linalg.norm(np.array(PALETTE, np.float64) - bgr, axis=1)
    return int(np.argmin(d))


def _face_colour(crop: U8) -> npt.NDArray[np.float64]:
    """The dominant colour of a face crop (the median of its brightest half: skips stripes)."""
    px = crop.reshape(-1, 3).astype(np.float64)
    bright = px[px.sum(axis=1) >= np.median(px.sum(axis=1))]
    return np.asarray(np.median(bright, axis=0), np.float64)


def fake_embed(aligned: U8) -> F32:
    """[N, 8] unit vectors of aligned crops: soft similarity of the face colour to `PALETTE`."""
    if len(aligned) == 0:
        return np.zeros((0, len(PALETTE)), np.float32)
    pal = np.array(PALETTE, np.float64)
    out = np.zeros((len(aligned), len(PALETTE)), np.float32)
    for i, crop in enumerate(aligned):
        s = crop.shape[0]
        c = _face_colour(crop[s // 4 : s // 2, s // 4 : 3 * s // 4])  # cheeks/eyes: no mouth
        v = np.exp(-(np.linalg.norm(pal - c, axis=1) ** 2) / (2 * _SIGMA**2)) + 1e-6
        out[i] = v / np.linalg.norm(v)
    return out


class FakeExpression:
    """Expression scores from a face's colour: `expected_label(person)` at 0.8, the rest spread
    over the other supported labels; valence/arousal from the label table (estimated)."""

    supported = SUPPORTED

    def __call__(self, image: U8, faces: FaceDetections) -> EmotionScores:
        probs = np.zeros((len(faces), len(LABELS)), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(faces.boxes.astype(int)):
            crop = image[max(y1, 0) : max(y2, 1), max(x1, 0) : max(x2, 1)]
            label = expected_label(_person(_face_colour(crop))) if crop.size else "neutral"
            probs[i, SUPPORTED] = 0.2 / (int(SUPPORTED.sum()) - 1)
            probs[i, LABELS.index(label)] = 0.8
        va = estimate_valence_arousal(probs, SUPPORTED)
        return EmotionScores(probs, SUPPORTED.copy(), va, True)


class FakeActionModel:
    """Facial actions from the drawn mouth: `jawOpen` is the dark share of the mouth region."""

    def __call__(
        self,
        image_rgb: U8,
        box: F32,
        eyes: F32,
        prior: tuple[F32, F32] | None = None,
        bgr: bool = False,
    ) -> FacialActions:
        t0 = time.perf_counter()
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        ys = slice(int(y1 + 0.63 * h), int(y1 + 0.87 * h))
        xs = slice(int(x1 + 0.36 * w), int(x1 + 0.64 * w))
        region = image_rgb[ys, xs]
        dark = float((region.max(axis=2) < 40).mean()) if region.size else 0.0
        scores = np.zeros(len(BLENDSHAPES), np.float32)
        scores[INDEX["jawOpen"]] = min(1.0, dark * 2.0)
        scores[INDEX["mouthClose"]] = 1.0 - scores[INDEX["jawOpen"]]
        grid = np.linspace(0.2, 0.8, 22)
        u, v = np.meshgrid(grid, grid)
        pts = np.stack([x1 + u.ravel() * w, y1 + v.ravel() * h, np.zeros(u.size)], axis=1)
        landmarks = np.resize(pts, (478, 3)).astype(np.float32)
        return FacialActions(landmarks, scores, 1.0, (time.perf_counter() - t0) * 1e3)


# -- voice -----------------------------------------------------------------------------------
class FakeVoice:
    """A speaker's voice chain: energy VAD per 32 ms chunk, energy every 20 ms, pitch from the
    dominant frequency, the real prosody window. Reads PyAV frames like `VoiceAnalyzer`."""

    def __init__(self, window_s: float = 2.0, hop_s: float = 0.25) -> None:
        self.to16k = Resampler(_RATE)
        self.window = ProsodyWindow(window_s, hop_s)
        self._pending = np.zeros(0, np.float32)
        self._t = 0.0  # stream time of _pending[0]
        self._steps: deque[VadStep] = deque()

    def feed_many(self, frames: list[Any]) -> VoiceUpdate:
        """Analyse a batch of frames (None flushes the end)."""
        parts = [self.to16k(f) for f in frames]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        self._pending = np.concatenate([self._pending, audio])
        steps: list[VadStep] = []
        hops: list[HopFeatures] = []
        while len(self._pending) >= CHUNK:
            chunk, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            t = self._t
            self._t = round(t + CHUNK / _RATE, 6)
            db = _dbfs(chunk)
            speech = db > SPEECH_DBFS
            steps.append(VadStep(t, 0.95 if speech else 0.02, speech))
            hz = _dominant_hz(chunk) if speech else 0.0
            per_hop = round(ENERGY_HOP_S * _RATE)
            for k in range(0, CHUNK - per_hop // 2, per_hop):
                part = chunk[k : k + per_hop]
                h_t = round(t + k / _RATE, 6)
                hops.append(HopFeatures(h_t, _dbfs(part), hz, 0.9 if speech else 0.1, speech,
                                        0.95 if speech else 0.02))  # fmt: skip
        return VoiceUpdate(steps, hops, self.window.add(hops), audio)


def _dbfs(x: F32) -> float:
    return float(10 * np.log10(max(float(np.mean(x.astype(np.float64) ** 2)), 1e-10)))


def _dominant_hz(x: F32) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec[1:]) + 1) * _RATE / len(x)


class FakeSpeakerEmbedder:
    """Voice prints of mel windows: the normalised mean mel spectrum (tones of different
    frequencies are different speakers) plus window-to-window variation as real voice prints
    have (same voice ~0.8 similar, others ~0): the variation is seeded by the window itself."""

    dims = 256
    spread = 0.5  # norm of the variation relative to the voice's own part

    def embed_mels(self, windows: list[F32]) -> F32:
        out = np.zeros((len(windows), self.dims), np.float32)
        for i, w in enumerate(windows):
            v = np.sqrt(np.maximum(w.mean(axis=0), 0.0)) + 1e-6 if len(w) else np.ones(40)
            rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(w).tobytes()))
            noise = rng.standard_normal(self.dims - len(v))
            e = np.concatenate([v / np.linalg.norm(v), self.spread * noise / np.linalg.norm(noise)])
            out[i] = e / np.linalg.norm(e)
        return out


# -- the stage source ------------------------------------------------------------------------
class FakeStages:
    """A `StageSource` over the fake models (see the module docstring): same config keys,
    same per-stream objects, no model files.

    Args:
        config: thresholds, tracking, smoothing, audio, diarization and actions settings (the
            model names are ignored).
        voice: give voices (default `audio.enabled`).
        canonical: MediaPipe's canonical face (`CanonicalFace.from_task`): behaviour signals
            from the fake detector's 5 points when `behaviour.enabled` (None: behaviour off;
            no posture, and the fake facial-action mesh is not a face, so it is not used).
    """

    def __init__(
        self, config: Config, voice: bool | None = None, canonical: CanonicalFace | None = None
    ) -> None:
        self.config = config
        self.canonical = canonical
        with_voice = config.audio.enabled if voice is None else voice
        self.speaker_embedder: FakeSpeakerEmbedder | None = (
            FakeSpeakerEmbedder() if with_voice and config.diarization.enabled else None
        )
        self.action_model: FakeActionModel | None = (
            FakeActionModel() if config.actions.enabled else None
        )
        self.detector = FakeDetector(config.detection.min_face_px)
        self.expression = FakeExpression()

    @property
    def supported(self) -> np.ndarray:
        return SUPPORTED.copy()

    @property
    def supported_labels(self) -> list[str]:
        return [lab for lab, s in zip(LABELS, SUPPORTED, strict=True) if s]

    @property
    def va_estimated(self) -> bool:
        return True

    @property
    def model_names(self) -> list[str]:
        return ["fake_expression", "fake_detector", "fake_embedder"]

    def vision(
        self, config: Config | None = None, numbering: Numbering | None = None, live: bool = False
    ) -> VisionPipeline:
        """A real vision pipeline over the fake models (one per video track)."""
        c = config or self.config
        tracker = IdentityTracker(c.tracking, fake_embed, numbering=numbering)
        signals = None
        if c.behaviour.enabled and self.canonical is not None:
            signals = BehaviourSignals.build(c.behaviour, self.canonical)
        return VisionPipeline(
            self.detector,
            tracker,
            self.expression,
            ExpressionSmoother(c.smoothing),
            face_actions(c, self.action_model),
            signals,
            signal_landmarks=False,
        )

    def voice(self) -> FakeVoice:
        a = self.config.audio
        return FakeVoice(a.window_s, a.hop_s)
