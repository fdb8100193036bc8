"""One factory for ONNX Runtime sessions: provider choice, threads, warm-up, sharing."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.allocator import trim_allocator
from stream.core.config import Config, RuntimeConfig
from stream.core.errors import ModelError
from stream.models.graph import fast_model
from stream.models.registry import Manifest, ModelStore
from stream.models.scheduler import BatchingSession

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Models whose calls the scheduler may merge (streaming audio models keep per-call state).
BATCHED_TASKS = ("detection", "embedding", "emotion")
#: Per-face models whose large batches are split on the CPU (see ChunkedSession).
CHUNKED_TASKS = ("embedding", "emotion")
#: Input bytes per call of a chunked model: 3 faces of 112x112x3 float32, 34 of 64x64x1.
CHUNK_INPUT_BYTES = 512 * 1024


# ONNX Runtime (1.32 and later, Linux too) starts a telemetry client when it is imported: it
# writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db} (interpreter
# path, OS, CPU, error messages) and may upload them. Nothing is stored unless asked, so it is
# switched off before the first import; `disable_telemetry_events()` alone comes too late (the
# files are written at import). ORT_DISABLE_TELEMETRY is the variable this build reads,
# ORT_TELEMETRY_DISABLED the one upstream documents; a value already set by the user wins.
TELEMETRY_ENV = ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED")
for _var in TELEMETRY_ENV:
    os.environ.setdefault(_var, "1")


def _ort() -> Any:
    import onnxruntime

    if os.environ.get(TELEMETRY_ENV[0]) == "1":
        onnxruntime.disable_telemetry_events()
    return onnxruntime


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """Return the provider list for a requested mode.

    Raises:
        ModelError: `cuda` was requested but this onnxruntime has no CUDA provider.
    """
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise ModelError(
                "runtime.provider = cuda, but this onnxruntime build has no CUDA provider "
                "(install the `gpu` extra: pip install 'emotion-stream[gpu]')"
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


class SessionFactory:
    """Creates each model's session once and shares it between stages and threads.

    Args:
        store: the verified model files.
        runtime: provider, threads, batching.
        rare: models called only a few times a minute per stream (the posture model: at most
            0.5 calls a second). They skip ONNX Runtime's layout optimisations, which copy
            convolution weights into blocked layouts: BlazePose full holds 14.5 instead of
            22.6 MiB, at 32 instead of 17 ms a call.
    """

    def __init__(
        self, store: ModelStore, runtime: RuntimeConfig, rare: frozenset[str] = frozenset()
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.rare = rare
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.providers = choose_providers(runtime.provider, _ort().get_available_providers())
        #: Merge concurrent calls of the vision models across streams (see scheduler.py).
        self.batching = runtime.batching == "on" or (
            runtime.batching == "auto" and self.providers[0] == CUDA
        )

    def get(self, name: str) -> Any:
        """Return the (cached) InferenceSession of a manifest model, verified and warmed up."""
        with self._lock:
            sess = self._sessions.get(name)
            if sess is None:
                sess = self._create(name, self.store.path(name))
                self._sessions[name] = sess
            return sess

    def active_provider(self, name: str) -> str:
        """Provider actually used by a model's session (CUDA may fall back to CPU)."""
        return str(self.get(name).get_providers()[0])

    def _create(self, name: str, path: Path) -> Any:
        ort = _ort()
        opts = ort.SessionOptions()
        # Streaming audio models run on tiny inputs many times a second: waking a thread pool
        # for each call costs more than it saves.
        task = self.store.manifest[name].task
        audio = task in ("vad", "pitch")
        threads = self.runtime.audio_intra_op_threads if audio else self.runtime.intra_op_threads
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = self.runtime.inter_op_threads
        # Several sessions run one after another on few cores: idle workers must not spin.
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.runtime.allow_spinning else "0"
        )
        level = ort.GraphOptimizationLevel
        opts.graph_optimization_level = (
            level.ORT_ENABLE_EXTENDED if name in self.rare else level.ORT_ENABLE_ALL
        )
        opts.log_severity_level = 3
        # No arena per session (each kept its largest call: 393 MiB on the 9-face gallery); on
        # the CPU one arena shared by every session instead of malloc (see shared_arena). CUDA
        # sessions do not use it (measured on the CPU only).
        opts.enable_cpu_mem_arena = False
        cpu_only = self.providers == [CPU]
        if cpu_only and shared_arena(ort):
            opts.add_session_config_entry("session.use_env_allocators", "1")
        try:
            sess = ort.InferenceSession(
                fast_model(path), sess_options=opts, providers=self.providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"could not load model {path}: {exc}") from None
        if cpu_only:
            release_model_bytes(sess)
        if self.providers[0] == CUDA and sess.get_providers()[0] != CUDA:
            log.warning("%s: CUDA provider unavailable at run time, using CPU", name)
        log.info("loaded %s with %s", name, sess.get_providers()[0])
        if self.runtime.warmup:
            self._warm_up(sess, name)
        # Loading parsed and copied the model (ONNX Runtime's protobuf, graph rewrites): hand
        # those freed pages back before frames arrive (the pose model's load left ~60 MB).
        trim_allocator()
        if self.batching and task in BATCHED_TASKS and BatchingSession.batchable(sess):
            wait = self.runtime.batch_wait_ms / 1e3
            return BatchingSession(sess, self.runtime.batch_max, wait, name)
        if not self.batching and task in CHUNKED_TASKS:
            return ChunkedSession.wrap(sess, CHUNK_INPUT_BYTES)
        return sess

    @staticmethod
    def _warm_up(sess: Any, name: str = "model") -> bool:
        """Run once on zeros so the first real frame does not pay for lazy initialisation.

        The first dynamic dimension of each input is its batch (1: also the middle one of a
        recurrent state [layers, batch, hidden] such as Silero's); other dynamic sizes become
        576 samples in a 2-D input (Silero's 64 context + 512 chunk) or 64 (image sides, frames).
        A model that rejects these is logged as a warning; returns whether it ran.
        """
        ort = _ort()
        feeds = {}
        for inp in sess.get_inputs():
            dims = list(inp.shape)
            default = 576 if len(dims) == 2 else 64
            shape: list[int] = []
            batch_seen = False
            for d in dims:
                if isinstance(d, int) and d > 0:
                    shape.append(d)
                else:
                    shape.append(default if batch_seen else 1)
                    batch_seen = True
            if "int64" in inp.type:
                feeds[inp.name] = np.array(16000, dtype=np.int64)  # e.g. a sample-rate scalar
            else:
                feeds[inp.name] = np.zeros(shape, dtype=np.float32)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        try:
            sess.run(None, feeds, quiet)
        except Exception as exc:  # warm-up is best effort; a real failure shows on first use
            log.warning("%s: warm-up failed: %s", name, str(exc).splitlines()[0])
            return False
        return True


#: The shared CPU arena's first region: reserved, not resident; only the pages that model calls
#: touch count (~18-25 MB on the 9-face gallery, two calls at a time).
ARENA_INITIAL_BYTES = 64 << 20
#: Most the arena grows by at once when a call does not fit (powers of two up to this).
ARENA_MAX_EXTEND_BYTES = 16 << 20
_arena_lock = threading.Lock()
_arena: list[bool] = []  # [registered?] once tried


def shared_arena(ort: Any) -> bool:
    """Register one CPU memory arena for every session of this process (once); False where this
    onnxruntime cannot, and sessions then allocate with malloc.

    Every model call allocates its activations (one planned block per call: YuNet ~9 MB at
    640x384, BlazePose ~11 MB, MobileFaceNet ~6 MB a face) and frees them at the end. Through
    malloc, glibc's dynamic thresholds put those blocks in the heaps and kept them there,
    fragmented among live blocks and spread over one heap per calling thread (~60 MB free and
    resident on the 9-face gallery). One arena, whose first region is large enough for the
    biggest calls, serves them all from the same pages: resident memory is the largest set of
    activations alive at once, with no page faults for reused pages.
    """
    with _arena_lock:
        if _arena:
            return _arena[0]
        try:
            cfg = ort.OrtArenaCfg(
                {
                    "arena_extend_strategy": 0,  # kNextPowerOfTwo: the first region is used whole
                    "initial_chunk_size_bytes": ARENA_INITIAL_BYTES,
                    "max_power_of_two_extend_bytes": ARENA_MAX_EXTEND_BYTES,
                }
            )
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, cfg)
            _arena.append(True)
        except Exception as exc:  # an onnxruntime without shared allocators: malloc it is
            log.debug("no shared CPU arena: %s", exc)
            _arena.append(False)
        return _arena[0]


def release_model_bytes(sess: Any) -> None:
    """Let go of the serialized model a CPU session was built from.

    onnxruntime's Python `InferenceSession` keeps the bytes it was given for its whole life, to
    rebuild itself on another provider when one fails at run time; the rewritten models
    (graph.py) are passed as bytes, so ~11 MB stayed resident for nothing. A CPU-only session
    has no provider to fall back to, so its fallback is switched off and the bytes dropped.
    """
    if getattr(sess, "_model_bytes", None) is not None:
        sess.disable_fallback()
        sess._model_bytes = None


class ChunkedSession:
    """A per-face model called on at most `rows` faces at a time, outputs joined in order.

    A call's native scratch memory grows with its batch (MobileFaceNet: ~5.8 MB a face, so
    ~52 MB for a 9-face frame) and glibc keeps those pages after the call; chunks of about
    `CHUNK_INPUT_BYTES` of input bound it (~12 MB). Each face is computed independently, so
    the outputs are bitwise those of one call (tests/test_memory.py), and on 2 cores the
    chunks measured no slower (MobileFaceNet and the face-api expression net a little faster).

    Args:
        session: the InferenceSession (one input; every output has the batch first).
        rows: most faces per call (>= 1).
    """

    def __init__(self, session: Any, rows: int) -> None:
        if rows < 1:
            raise ValueError(f"ChunkedSession: rows must be >= 1, got {rows}")
        self.session = session
        self.rows = rows

    @classmethod
    def wrap(cls, session: Any, max_input_bytes: int) -> Any:
        """`session` chunked to about `max_input_bytes` of input a call; unchanged unless its
        one input is a batch-first float tensor of fixed row size and its outputs batch-first."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            return session
        if not BatchingSession.batchable(session):
            return session
        row = inputs[0].shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in row) or not all(
            len(o.shape) > 0 and not (isinstance(o.shape[0], int) and o.shape[0] > 0)
            for o in outputs
        ):
            return session
        row_bytes = 4 * int(np.prod(row))
        return cls(session, max(1, max_input_bytes // row_bytes))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.session, attr)

    def run(
        self, output_names: list[str] | None, feeds: dict[str, np.ndarray], run_options: Any = None
    ) -> list[np.ndarray]:
        """Like `InferenceSession.run`, in chunks of at most `rows` faces."""
        ((name, x),) = feeds.items()
        n = len(x)
        if n <= self.rows:
            return list(self.session.run(output_names, feeds, run_options))
        parts = [
            self.session.run(output_names, {name: x[i : i + self.rows]}, run_options)
            for i in range(0, n, self.rows)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def make_factory(config: Config) -> SessionFactory:
    """Session factory over the configured models folder and manifest (the posture model
    is a rare one, see `SessionFactory`)."""
    manifest = Manifest.load(Path(config.models.manifest) if config.models.manifest else None)
    store = ModelStore(config.models_dir(), manifest, verify=config.models.verify)
    return SessionFactory(store, config.runtime, rare=frozenset({config.behaviour.posture_model}))
