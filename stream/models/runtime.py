"""One factory for ONNX Runtime sessions: provider choice, threads, warm-up, sharing."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.config import Config, RuntimeConfig
from stream.core.errors import ModelError
from stream.models.registry import Manifest, ModelStore

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _ort() -> Any:
    import onnxruntime

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
    """Creates each model's session once and shares it between stages and threads."""

    def __init__(self, store: ModelStore, runtime: RuntimeConfig) -> None:
        self.store = store
        self.runtime = runtime
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.providers = choose_providers(runtime.provider, _ort().get_available_providers())

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
        audio = self.store.manifest[name].task in ("vad", "pitch")
        threads = self.runtime.audio_intra_op_threads if audio else self.runtime.intra_op_threads
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = self.runtime.inter_op_threads
        # Several sessions run one after another on few cores: idle workers must not spin.
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.runtime.allow_spinning else "0"
        )
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"could not load model {path}: {exc}") from None
        if self.providers[0] == CUDA and sess.get_providers()[0] != CUDA:
            log.warning("%s: CUDA provider unavailable at run time, using CPU", name)
        log.info("loaded %s with %s", name, sess.get_providers()[0])
        if self.runtime.warmup:
            self._warm_up(sess)
        return sess

    @staticmethod
    def _warm_up(sess: Any) -> None:
        """Run once on zeros so the first real frame does not pay for lazy initialisation.

        Dynamic sizes become 1 (batch), 64 (image sides) or 576 samples for 2-D audio inputs
        (Silero's 64 context + 512 chunk); a model that rejects these just skips warm-up.
        """
        ort = _ort()
        feeds = {}
        for inp in sess.get_inputs():
            dims = list(inp.shape)
            default = 576 if len(dims) == 2 else 64
            shape = [
                d if isinstance(d, int) and d > 0 else (1 if i == 0 else default)
                for i, d in enumerate(dims)
            ]
            if "int64" in inp.type:
                feeds[inp.name] = np.array(16000, dtype=np.int64)  # e.g. a sample-rate scalar
            else:
                feeds[inp.name] = np.zeros(shape, dtype=np.float32)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        try:
            sess.run(None, feeds, quiet)
        except Exception as exc:  # warm-up is best effort; a real failure shows on first use
            log.debug("warm-up skipped: %s", exc)


def make_factory(config: Config) -> SessionFactory:
    """Session factory over the configured models folder and manifest."""
    manifest = Manifest.load(Path(config.models.manifest) if config.models.manifest else None)
    store = ModelStore(config.models_dir(), manifest, verify=config.models.verify)
    return SessionFactory(store, config.runtime)
