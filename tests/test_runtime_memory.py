"""Model sessions in bounded memory: one shared CPU arena, no serialized model kept alive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream.core.config import Config
from stream.models.runtime import ChunkedSession, SessionFactory, release_model_bytes

ROOT = Path(__file__).resolve().parent.parent


class _Sess:
    """The two parts of onnxruntime's Python InferenceSession that release_model_bytes uses."""

    def __init__(self, model: bytes | None) -> None:
        self._model_bytes = model
        self.fallback = True

    def disable_fallback(self) -> None:
        self.fallback = False


def test_release_model_bytes_drops_the_bytes_and_the_fallback_that_needs_them() -> None:
    s = _Sess(b"\0" * 1024)
    release_model_bytes(s)
    assert s._model_bytes is None and not s.fallback
    from_path = _Sess(None)  # built from a file: nothing to drop, fallback left alone
    release_model_bytes(from_path)
    assert from_path.fallback


def _inner(s: Any) -> Any:
    return s.session if isinstance(s, ChunkedSession) else s


@pytest.mark.integration
def test_factory_sessions_share_the_arena_and_keep_no_model_bytes(factory: SessionFactory) -> None:
    """MobileFaceNet and the face landmarks are rewritten at load (graph.py) and built from bytes:
    no bytes object of the model's size stays reachable from the session."""
    for name in ("mobilefacenet_sirius_192d", "mp_face_landmarks_detector", "yunet_n_dynamic"):
        sess = _inner(factory.get(name))
        held = [len(v) for v in vars(sess).values() if isinstance(v, bytes | bytearray)]
        opts = sess.get_session_options()
        shared = opts.get_session_config_entry("session.use_env_allocators")
        print(f"{name}: bytes held {held}, shared arena {shared}")
        assert not any(n > 64 * 1024 for n in held)
        assert shared == "1"


#: The start of the scripts below, run in fresh processes: the factory over the models folder
#: given as the first argument, and the process's resident anonymous memory (MiB).
_PRELUDE = """
import json, sys
import numpy as np
from stream.core.allocator import trim_allocator
from stream.core.config import load_config
from stream.models.runtime import SessionFactory, make_factory

def anon():
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) / 1024 for x in f if x.startswith("RssAnon:"))

cfg = load_config(env={}).replace("models", dir=sys.argv[1])
f = make_factory(cfg)
"""

_RARE = (
    _PRELUDE
    + """
if sys.argv[2] == "all":  # the same factory without rare models
    f = SessionFactory(f.store, cfg.runtime)
s = f.get(cfg.behaviour.posture_model)  # warmed up at load
trim_allocator()
x = anon()
f.get("mp_face_landmarks_detector")
trim_allocator()
level = str(s.get_session_options().graph_optimization_level)
mesh = f.get("mp_face_landmarks_detector").get_session_options().graph_optimization_level
print(json.dumps({"level": level, "mesh": str(mesh), "anon": x}))
"""
)


@pytest.mark.integration
def test_the_rare_posture_model_skips_layout_copies(config: Config) -> None:
    """The posture model (a few calls a minute) is built without ONNX Runtime's layout
    optimisations, which copy its convolution weights into blocked layouts; the per-frame
    models keep them. Each variant in a fresh process: the resident memory after loading it."""
    runs = {}
    for variant in ("rare", "all"):
        out = subprocess.run(
            [sys.executable, "-c", _RARE, config.models.dir, variant],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    saved = runs["all"]["anon"] - runs["rare"]["anon"]
    print(f"posture model: {runs['rare']['level']} vs {runs['all']['level']}; "
          f"{saved:.1f} MiB less resident after loading it")  # fmt: skip
    assert runs["rare"]["level"].endswith("ORT_ENABLE_EXTENDED")
    assert runs["rare"]["mesh"].endswith("ORT_ENABLE_ALL")
    assert runs["all"]["level"].endswith("ORT_ENABLE_ALL")
    assert saved >= 4.0


#: Runs in a fresh process: loads four models, then calls each at its analyze size twice over
#: (YuNet on a 640x384 frame, MobileFaceNet on 3 faces, the face landmarks, BlazePose) and
#: reports how much resident anonymous memory the calls added, without trimming the heap.
_CALLS = (
    _PRELUDE
    + """
shapes = {"yunet_n_dynamic": [1, 3, 384, 640], "mobilefacenet_sirius_192d": [3, 112, 112, 3],
          "mp_face_landmarks_detector": [1, 256, 256, 3], "pose_landmark_full": [1, 256, 256, 3]}
sessions = {n: getattr(f.get(n), "session", f.get(n)) for n in shapes}
trim_allocator()
before = anon()
rng = np.random.default_rng(0)
for _ in range(2):
    for n, shape in shapes.items():
        s = sessions[n]
        for _ in range(3):
            s.run(None, {s.get_inputs()[0].name: rng.random(shape, dtype=np.float32)})
print(json.dumps({"added_mib": anon() - before}))
"""
)

#: Resident memory the calls above may add: the largest activations alive at once (BlazePose
#: ~11 MB, YuNet ~9 MB) and their outputs. Measured 6.1 MiB with the shared arena (most of its
#: pages were touched by the warm-ups at load); 59-83 MiB through malloc, where each model's
#: activations stayed in the heap beside the others'.
CALLS_ADDED_MIB = 24.0


@pytest.mark.integration
def test_model_calls_reuse_one_arena_instead_of_growing_the_heap(config: Config) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CALLS, config.models.dir],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    added = json.loads(out.stdout.strip().splitlines()[-1])["added_mib"]
    print(f"24 model calls at analyze sizes added {added:.1f} MiB (bound {CALLS_ADDED_MIB})")
    assert added <= CALLS_ADDED_MIB
