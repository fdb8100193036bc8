"""Configuration: defaults in code, overridden by a TOML file, then environment, then CLI flags.

`configs/default.toml` mirrors the defaults below (a test keeps the two equal). Unknown keys and
out-of-range values raise `ConfigError` naming the key, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.core.data import default_config_path, web_dir
from stream.core.errors import ConfigError

#: Environment variable naming the models folder (the `models.dir` config key).
ENV_MODELS = "EMOTION_STREAM_MODELS"
#: Environment variable naming the config file to load instead of configs/default.toml.
ENV_CONFIG = "EMOTION_STREAM_CONFIG"
#: Environment variable forcing the ONNX Runtime provider (`runtime.provider`).
ENV_PROVIDER = "EMOTION_STREAM_PROVIDER"

DEFAULT_CONFIG_PATH = default_config_path()


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key}: {msg}")


@dataclass(frozen=True)
class EnsembleMember:
    """One emotion model of the ensemble and its weight."""

    model: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check(bool(self.model), "emotion.ensemble.model", "must name a manifest entry")
        _check(self.weight > 0, "emotion.ensemble.weight", f"must be > 0, got {self.weight}")


@dataclass(frozen=True)
class ModelsConfig:
    """Where model files live and which manifest entries each stage uses."""

    dir: str = "models"
    manifest: str = ""
    detector: str = "yunet_n_dynamic"
    embedder: str = "mobilefacenet_sirius_192d"
    vad: str = "silero_vad_v6"
    pitch: str = "crepe_tiny_pitch"
    verify: bool = True


@dataclass(frozen=True)
class RuntimeConfig:
    """ONNX Runtime session settings shared by every model."""

    provider: str = "auto"
    intra_op_threads: int = 1
    audio_intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    warmup: bool = True
    batching: str = "auto"
    batch_max: int = 32
    batch_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        _check(
            self.provider in ("auto", "cpu", "cuda"),
            "runtime.provider",
            f"must be auto, cpu or cuda, got {self.provider!r}",
        )
        _check(self.intra_op_threads >= 0, "runtime.intra_op_threads", "must be >= 0 (0 = all)")
        ok = self.audio_intra_op_threads >= 0
        _check(ok, "runtime.audio_intra_op_threads", "must be >= 0 (0 = all)")
        _check(self.inter_op_threads >= 0, "runtime.inter_op_threads", "must be >= 0 (0 = all)")
        _check(
            self.batching in ("auto", "on", "off"),
            "runtime.batching",
            f"must be auto, on or off, got {self.batching!r}",
        )
        _check(self.batch_max >= 1, "runtime.batch_max", "must be >= 1")
        _check(0 <= self.batch_wait_ms <= 100, "runtime.batch_wait_ms", "must be in [0, 100]")


@dataclass(frozen=True)
class DetectionConfig:
    """Face detector thresholds and input size."""

    score_threshold: float = 0.6
    nms_iou: float = 0.3
    max_side: int = 640
    min_face_px: int = 12
    max_faces: int = 32

    def __post_init__(self) -> None:
        _check(0 < self.score_threshold < 1, "detection.score_threshold", "must be in (0, 1)")
        _check(0 < self.nms_iou < 1, "detection.nms_iou", "must be in (0, 1)")
        _check(self.max_side >= 64, "detection.max_side", "must be >= 64 pixels")
        _check(self.min_face_px >= 1, "detection.min_face_px", "must be >= 1")
        _check(self.max_faces >= 1, "detection.max_faces", "must be >= 1")


@dataclass(frozen=True)
class EmotionConfig:
    """Which expression models run and how their outputs are combined."""

    ensemble: tuple[EnsembleMember, ...] = (
        EnsembleMember("faceapi_expression_7c", 1.5),
        EnsembleMember("fer_minixception_7c", 1.0),
    )

    def __post_init__(self) -> None:
        _check(len(self.ensemble) > 0, "emotion.ensemble", "needs at least one model")


@dataclass(frozen=True)
class TrackingConfig:
    """Identity tracking: geometric association plus an embedding gallery per identity."""

    iou_match: float = 0.3
    iou_certain: float = 0.5
    appearance_certain: float = 0.75
    reverify_s: float = 2.0
    reid_threshold: float = 0.42
    geometry_weight: float = 0.15
    gallery_size: int = 16
    gallery_diversity: float = 0.92
    min_hits: int = 2
    tentative_max_s: float = 1.0
    quality_min_face_px: int = 20
    quality_min_sharpness: float = 10.0
    quality_max_yaw: float = 0.45
    keep_after_change: float = 0.70
    flow_keep: float = 0.60
    reid_margin: float = 0.10
    reid_per_doubling: float = 0.02
    reid_poor_view: float = 0.08
    consolidate: bool = True
    join_threshold: float = 0.66
    join_margin: float = 0.05

    def __post_init__(self) -> None:
        for key in ("iou_match", "iou_certain", "appearance_certain", "gallery_diversity"):
            v = getattr(self, key)
            _check(0 < v <= 1, f"tracking.{key}", f"must be in (0, 1], got {v}")
        _check(self.iou_match <= self.iou_certain, "tracking.iou_certain", "must be >= iou_match")
        _check(-1 < self.reid_threshold < 1, "tracking.reid_threshold", "must be in (-1, 1)")
        _check(self.reverify_s > 0, "tracking.reverify_s", "must be > 0 seconds")
        _check(self.geometry_weight >= 0, "tracking.geometry_weight", "must be >= 0")
        _check(self.gallery_size >= 1, "tracking.gallery_size", "must be >= 1")
        _check(self.min_hits >= 1, "tracking.min_hits", "must be >= 1")
        _check(self.tentative_max_s >= 0, "tracking.tentative_max_s", "must be >= 0")
        _check(self.quality_min_face_px >= 1, "tracking.quality_min_face_px", "must be >= 1")
        _check(self.quality_max_yaw > 0, "tracking.quality_max_yaw", "must be > 0")
        for key in ("keep_after_change", "flow_keep", "join_threshold"):
            v = getattr(self, key)
            _check(-1 < v < 1, f"tracking.{key}", f"must be in (-1, 1), got {v}")
        for key in ("reid_margin", "reid_per_doubling", "reid_poor_view", "join_margin"):
            v = getattr(self, key)
            _check(0 <= v < 1, f"tracking.{key}", f"must be in [0, 1), got {v}")


@dataclass(frozen=True)
class SmoothingConfig:
    """Temporal smoothing of expression probabilities and the shown label."""

    tau_s: float = 0.6
    hysteresis: float = 0.08
    uncertain_below: float = 0.40
    reset_after_s: float = 2.0

    def __post_init__(self) -> None:
        _check(self.tau_s >= 0, "smoothing.tau_s", "must be >= 0 seconds (0 = no smoothing)")
        _check(0 <= self.hysteresis < 1, "smoothing.hysteresis", "must be in [0, 1)")
        _check(0 <= self.uncertain_below < 1, "smoothing.uncertain_below", "must be in [0, 1)")
        _check(self.reset_after_s > 0, "smoothing.reset_after_s", "must be > 0 seconds")


@dataclass(frozen=True)
class AnalyzeConfig:
    """Defaults of the offline `analyze` command."""

    fps: float = 10.0
    max_gap_s: float = 0.5
    detect_fps: float = 10.0
    emotion_fps: float = 10.0
    confident_detect_fps: float = 2.0
    coarse_max_side: int = 320
    confident_coarse_fps: float = 0.0
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        _check(0 < self.fps <= 240, "analyze.fps", f"must be in (0, 240], got {self.fps}")
        _check(self.max_pixels >= 1, "analyze.max_pixels", "must be >= 1 pixel")
        _check(self.max_gap_s > 0, "analyze.max_gap_s", "must be > 0 seconds")
        _check(self.detect_fps >= 0, "analyze.detect_fps", "must be >= 0 (0: every frame)")
        _check(self.emotion_fps >= 0, "analyze.emotion_fps", "must be >= 0 (0: every frame)")
        _check(
            self.confident_detect_fps >= 0,
            "analyze.confident_detect_fps",
            "must be >= 0 (0: always detect_fps)",
        )
        _check(
            self.coarse_max_side == 0 or self.coarse_max_side >= 64,
            "analyze.coarse_max_side",
            "must be 0 (off) or >= 64 pixels",
        )
        _check(
            self.confident_coarse_fps >= 0,
            "analyze.confident_coarse_fps",
            "must be >= 0 (0: detect_fps)",
        )


@dataclass(frozen=True)
class AudioConfig:
    """Voice analysis: denoising, voice activity, prosody windows and speaker matching."""

    enabled: bool = True
    denoise: bool = True
    atten_lim_db: float = 100.0
    agc_target_db: float = -18.0
    agc_max_gain_db: float = 36.0
    min_retention_db: float = -10.0
    window_s: float = 2.0
    hop_s: float = 0.25
    pitch_hop_s: float = 0.04
    vad_on: float = 0.5
    vad_off: float = 0.35
    vad_hangover_s: float = 0.25
    mouth_fps: float = 25.0
    match_window_s: float = 2.5
    match_threshold: float = 0.1

    def __post_init__(self) -> None:
        _check(0 < self.atten_lim_db <= 100, "audio.atten_lim_db", "must be in (0, 100]")
        _check(-40 <= self.agc_target_db <= -6, "audio.agc_target_db", "must be in [-40, -6]")
        ok = 0 <= self.agc_max_gain_db <= 60
        _check(ok, "audio.agc_max_gain_db", "must be in [0, 60] (0 turns the gain off)")
        ok = -60 <= self.min_retention_db <= 0
        _check(ok, "audio.min_retention_db", "must be in [-60, 0] dB")
        _check(0.5 <= self.window_s <= 30, "audio.window_s", "must be in [0.5, 30] seconds")
        _check(0.05 <= self.hop_s <= self.window_s, "audio.hop_s", "must be in [0.05, window_s]")
        _check(0.01 <= self.pitch_hop_s <= 0.1, "audio.pitch_hop_s", "must be in [0.01, 0.1]")
        ok = 0 < self.vad_off <= self.vad_on < 1
        _check(ok, "audio.vad_on", "needs 0 < vad_off <= vad_on < 1")
        _check(self.vad_hangover_s >= 0, "audio.vad_hangover_s", "must be >= 0")
        _check(1 <= self.mouth_fps <= 60, "audio.mouth_fps", "must be in [1, 60]")
        _check(self.match_window_s >= 0.5, "audio.match_window_s", "must be >= 0.5 seconds")
        _check(-1 < self.match_threshold < 1, "audio.match_threshold", "must be in (-1, 1)")


@dataclass(frozen=True)
class DiarizationConfig:
    """Who spoke when: a GE2E voice print per turn, clustered with an estimated count."""

    enabled: bool = True
    model: str = "resemblyzer_ge2e_256d"
    window_s: float = 1.5
    hop_s: float = 0.75
    max_speakers: int = 8
    threshold: float = 0.3
    min_speaker_s: float = 5.0
    min_turn_s: float = 0.5
    live: bool = False
    link_min_share: float = 0.5

    def __post_init__(self) -> None:
        _check(bool(self.model), "diarization.model", "must name a manifest entry")
        _check(0.5 <= self.window_s <= 5, "diarization.window_s", "must be in [0.5, 5] seconds")
        ok = 0.1 <= self.hop_s <= self.window_s
        _check(ok, "diarization.hop_s", "must be in [0.1, window_s]")
        _check(1 <= self.max_speakers <= 20, "diarization.max_speakers", "must be in [1, 20]")
        _check(0 < self.threshold < 2, "diarization.threshold", "must be in (0, 2)")
        _check(self.min_speaker_s >= 0, "diarization.min_speaker_s", "must be >= 0 seconds")
        _check(self.min_turn_s >= 0, "diarization.min_turn_s", "must be >= 0 seconds")
        ok = 0 < self.link_min_share <= 1
        _check(ok, "diarization.link_min_share", "must be in (0, 1]")


@dataclass(frozen=True)
class ActionsConfig:
    """Facial actions (MediaPipe landmarks + 52 blendshapes) per face."""

    enabled: bool = True
    landmarks_model: str = "mp_face_landmarks_detector"
    blendshapes_model: str = "mp_face_blendshapes"
    fps: float = 2.0
    per_frame: int = 1
    tau_s: float = 0.5
    raw: bool = False

    def __post_init__(self) -> None:
        _check(0 < self.fps <= 60, "actions.fps", "must be in (0, 60] per face")
        _check(self.per_frame >= 1, "actions.per_frame", "must be >= 1")
        _check(self.tau_s >= 0, "actions.tau_s", "must be >= 0 seconds (0 = no smoothing)")


@dataclass(frozen=True)
class BehaviourConfig:
    """Head pose, gaze/attention, blinks, nods/shakes and upper-body posture per face."""

    enabled: bool = True
    pose_tau_s: float = 0.1
    cone_yaw_deg: float = 25.0
    cone_pitch_deg: float = 20.0
    cone_pitch_centre_deg: float = -5.0
    drop_min_s: float = 2.0
    eye_hold_s: float = 0.6
    nod_min_deg: float = 2.5
    shake_min_deg: float = 3.0
    max_swing_s: float = 0.8
    posture: bool = True
    posture_live: bool = False
    posture_model: str = "pose_landmark_full"
    posture_fps: float = 0.2
    posture_max_per_s: float = 0.5
    posture_crop_side: float = 5.0

    def __post_init__(self) -> None:
        _check(0 <= self.pose_tau_s <= 2, "behaviour.pose_tau_s", "must be in [0, 2] seconds")
        for key in ("cone_yaw_deg", "cone_pitch_deg"):
            v = getattr(self, key)
            _check(0 < v <= 90, f"behaviour.{key}", f"must be in (0, 90] degrees, got {v}")
        ok = -45 <= self.cone_pitch_centre_deg <= 45
        _check(ok, "behaviour.cone_pitch_centre_deg", "must be in [-45, 45] degrees")
        _check(self.drop_min_s > 0, "behaviour.drop_min_s", "must be > 0 seconds")
        _check(self.eye_hold_s >= 0, "behaviour.eye_hold_s", "must be >= 0 seconds")
        _check(self.nod_min_deg > 0, "behaviour.nod_min_deg", "must be > 0 degrees")
        _check(self.shake_min_deg > 0, "behaviour.shake_min_deg", "must be > 0 degrees")
        _check(0.1 <= self.max_swing_s <= 3, "behaviour.max_swing_s", "must be in [0.1, 3] s")
        _check(bool(self.posture_model), "behaviour.posture_model", "must name a manifest entry")
        _check(0 < self.posture_fps <= 30, "behaviour.posture_fps", "must be in (0, 30] per face")
        ok = 0 < self.posture_max_per_s <= 60
        _check(ok, "behaviour.posture_max_per_s", "must be in (0, 60] per second")
        ok = 2 <= self.posture_crop_side <= 8
        _check(ok, "behaviour.posture_crop_side", "must be in [2, 8] face heights")


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server offered to peers."""

    urls: str
    username: str = ""
    credential: str = ""

    def __post_init__(self) -> None:
        ok = self.urls.startswith(("stun:", "turn:", "turns:"))
        _check(ok, "live.ice_servers.urls", f"needs a stun:/turn:/turns: URL, not {self.urls!r}")


@dataclass(frozen=True)
class LiveConfig:
    """The live server: network, limits and the per-stream frame budget."""

    host: str = "127.0.0.1"
    port: int = 8080
    web_dir: str = ""
    ice_servers: tuple[IceServer, ...] = ()
    max_fps: float = 15.0
    send_max_side: int = 0
    emotion_fps: float = 5.0
    detect_every_max: int = 4
    budget_utilisation: float = 0.8
    summary_interval_s: float = 2.0
    workers: int = 0
    max_sessions: int = 8
    max_viewers: int = 16
    max_message_bytes: int = 65536
    max_messages_per_s: float = 20.0
    idle_timeout_s: float = 30.0
    hello_timeout_s: float = 60.0
    max_video_tracks: int = 4
    max_audio_tracks: int = 2
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    tls_self_signed: bool = False

    def __post_init__(self) -> None:
        _check(0 <= self.port < 65536, "live.port", "must be 0..65535 (0: any free port)")
        _check(self.hello_timeout_s > 0, "live.hello_timeout_s", "must be > 0")
        _check(self.max_video_tracks >= 1, "live.max_video_tracks", "must be >= 1")
        _check(self.max_audio_tracks >= 0, "live.max_audio_tracks", "must be >= 0")
        _check(0 < self.max_fps <= 120, "live.max_fps", "must be in (0, 120]")
        ok = self.send_max_side == 0 or 64 <= self.send_max_side <= 8192
        _check(ok, "live.send_max_side", "must be 0 (detection.max_side) or 64..8192 pixels")
        _check(0 < self.emotion_fps <= 120, "live.emotion_fps", "must be in (0, 120]")
        _check(self.detect_every_max >= 1, "live.detect_every_max", "must be >= 1")
        _check(0 < self.budget_utilisation <= 1, "live.budget_utilisation", "must be in (0, 1]")
        _check(self.summary_interval_s > 0, "live.summary_interval_s", "must be > 0")
        _check(self.workers >= 0, "live.workers", "must be >= 0 (0: one per CPU core)")
        _check(self.max_sessions >= 1, "live.max_sessions", "must be >= 1")
        _check(self.max_viewers >= 0, "live.max_viewers", "must be >= 0")
        _check(self.max_message_bytes >= 1024, "live.max_message_bytes", "must be >= 1024")
        _check(self.max_messages_per_s > 0, "live.max_messages_per_s", "must be > 0")
        _check(self.idle_timeout_s > 0, "live.idle_timeout_s", "must be > 0")

    def web_path(self) -> Path:
        """The folder of pages to serve: `web_dir`, or the packaged pages when it is empty."""
        return (Path(self.web_dir).expanduser() if self.web_dir else web_dir()).resolve()


@dataclass(frozen=True)
class ClusterConfig:
    """Several `serve` workers sharing one Redis: session directory, admission, relay, wall.

    An empty `redis_url` is a single worker, exactly as without this section.
    """

    redis_url: str = ""
    worker_id: str = ""
    worker_url: str = ""
    capacity: int = 0
    heartbeat_s: float = 1.0
    ttl_s: float = 3.0
    prefix: str = "emotion-stream"
    wall_token: str = ""
    wall_interval_s: float = 2.0

    def __post_init__(self) -> None:
        ok = not self.redis_url or self.redis_url.startswith(("redis://", "rediss://", "unix://"))
        why = f"needs redis://, rediss:// or unix://, not {self.redis_url!r}"
        _check(ok, "cluster.redis_url", why)
        ok = not self.worker_url or self.worker_url.startswith(("http://", "https://"))
        _check(ok, "cluster.worker_url", f"needs http:// or https://, not {self.worker_url!r}")
        _check(self.capacity >= 0, "cluster.capacity", "must be >= 0 (0: live.max_sessions)")
        _check(self.heartbeat_s > 0, "cluster.heartbeat_s", "must be > 0 seconds")
        _check(self.ttl_s > self.heartbeat_s, "cluster.ttl_s", "must be > heartbeat_s")
        _check(bool(self.prefix), "cluster.prefix", "must not be empty")
        _check(self.wall_interval_s > 0, "cluster.wall_interval_s", "must be > 0 seconds")


@dataclass(frozen=True)
class WhipToken:
    """A WHIP ingest bearer token and the purpose the operator declares for its streams.

    By configuring a token the operator states that the people published with it were told of
    this purpose and agreed (the WebSocket page asks each person itself; WHIP clients cannot).
    """

    token: str
    purpose: str

    def __post_init__(self) -> None:
        _check(len(self.token) >= 16, "whip.tokens.token", "must be at least 16 characters")
        _check(bool(self.purpose.strip()), "whip.tokens.purpose", "must declare a purpose")


@dataclass(frozen=True)
class WhipConfig:
    """WHIP ingest (RFC 9725) at /whip: off while no token is configured."""

    tokens: tuple[WhipToken, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    models: ModelsConfig = field(default_factory=ModelsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    whip: WhipConfig = field(default_factory=WhipConfig)
    source: str = ""

    def replace(self, section: str, **values: Any) -> Config:
        """Return a copy with keys of one section replaced (values validated)."""
        current = getattr(self, section)
        try:
            updated = dataclasses.replace(current, **values)
        except TypeError as exc:
            raise ConfigError(f"config section [{section}]: {exc}") from None
        return dataclasses.replace(self, **{section: updated})

    def models_dir(self) -> Path:
        """The models folder; a relative path is taken from the current folder."""
        return Path(self.models.dir).expanduser().resolve()


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert one TOML value against a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer")
        return value
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        _check(isinstance(value, list), key, "must be a list")
        return tuple(_build(item_type, v, key) for v in value)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    raise ConfigError(f"config key {key}: unsupported type {annotation}")


def _build(cls: Any, table: Any, where: str) -> Any:
    """Build a dataclass from a TOML table, rejecting unknown keys."""
    _check(isinstance(table, dict), where, "must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} in [{where}]; "
            f"allowed: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in table.items()}
    return cls(**kwargs)


def load_config(path: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the configuration.

    Args:
        path: TOML file; defaults to $EMOTION_STREAM_CONFIG, then configs/default.toml if present.
        env: environment (defaults to os.environ); EMOTION_STREAM_MODELS and
            EMOTION_STREAM_PROVIDER override the file.

    Raises:
        ConfigError: the file is missing, not TOML, or has unknown keys or invalid values.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG):
        path = Path(env[ENV_CONFIG])
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config)} - {"source"}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(unknown)} in {path}; "
            f"allowed: {', '.join(sorted(sections))}"
        )
    built = {k: _build(hints[k], v, k) for k, v in data.items()}
    cfg = Config(**built, source=str(path) if path else "")
    if env.get(ENV_MODELS):
        cfg = cfg.replace("models", dir=env[ENV_MODELS])
    if env.get(ENV_PROVIDER):
        cfg = cfg.replace("runtime", provider=env[ENV_PROVIDER])
    return cfg
