"""Integration tests of detection, embedding and expression on the real models and media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.core.config import Config
from stream.core.labels import LABELS
from stream.core.types import U8, FaceDetections, VideoFrame
from stream.models.registry import HashCache, Manifest, ModelStore, sha256_file
from stream.models.runtime import SessionFactory
from stream.vision.align import align_faces
from stream.vision.detect import YuNetDetector
from stream.vision.emotion import EmotionEnsemble, EmotionModel, Member
from stream.vision.pipeline import VisionPipeline
from stream.vision.tracker import iou_matrix

from .conftest import MEDIA, imread, read_labels

IDS = MEDIA / "identities"
EXPR = MEDIA / "expressions"


def _largest_face(pipeline: VisionPipeline, img: U8) -> FaceDetections:
    dets = pipeline.detector(VideoFrame(img, 0.0))
    assert len(dets) > 0
    wh = dets.boxes[:, 2:] - dets.boxes[:, :2]
    return dets.select(np.array([int(np.argmax(wh.prod(axis=1)))]))


@pytest.mark.integration
def test_detector_finds_the_faces_in_identity_photos(pipeline: VisionPipeline) -> None:
    rows = [r for r in read_labels(IDS / "labels.csv") if not r["person"].startswith("MULTI")]
    missed = [
        r["file"]
        for r in rows
        if "aligned" not in r["file"]  # pre-cropped 160 px faces without context
        and len(pipeline.detector(VideoFrame(imread(IDS / r["file"]), 0.0))) == 0
    ]
    print(f"detector: {len(rows) - len(missed)}/{len(rows)} single-person photos, missed {missed}")
    assert len(missed) <= 1, missed
    expected = {
        "face_recognition/two_people.jpg": 2,
        "face_recognition/kit_with_rose.jpg": 2,
        "faceapijs/bbt_group1.jpg": 4,
        "openface/longoria_cooper.jpg": 2,
    }
    for name, count in expected.items():
        found = len(pipeline.detector(VideoFrame(imread(IDS / name), 0.0)))
        assert found == count, (name, found)


@pytest.mark.integration
def test_fixed_size_detector_letterboxes(config: Config, factory: SessionFactory) -> None:
    """The 320x320 model (for speed) finds the same faces through its letterbox."""
    spec = factory.store.manifest["yunet_n_320x320"]
    det = YuNetDetector(factory.get(spec.name), spec, config.detection)
    img = imread(IDS / "faceapijs/bbt_group1.jpg")
    found = det(VideoFrame(img, 0.0))
    ref = VisionPipeline.from_config(config, factory).detector(VideoFrame(img, 0.0))
    assert len(found) == len(ref) == 4
    assert iou_matrix(found.boxes, ref.boxes).max(axis=1).min() > 0.7


@pytest.mark.integration
def test_landmarks_are_in_template_order(pipeline: VisionPipeline) -> None:
    img = imread(IDS / "face_recognition/obama.jpg")
    lm = _largest_face(pipeline, img).landmarks[0]
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # eyes either side of the nose
    assert lm[3, 1] > lm[2, 1] and lm[4, 1] > lm[2, 1]  # mouth below the nose


def _embeddings(
    pipeline: VisionPipeline, files: list[tuple[str, str]]
) -> tuple[np.ndarray, list[str]]:
    embs, people = [], []
    for file, person in files:
        img = imread(IDS / file)
        face = _largest_face(pipeline, img)
        embed = pipeline.tracker.embed
        embs.append(embed(align_faces(img, face))[0])
        people.append(person)
    return np.stack(embs), people


@pytest.mark.integration
@pytest.mark.parametrize("group", ["bbt", "obama_biden"])
def test_same_person_embeddings_are_closer(
    pipeline: VisionPipeline, config: Config, group: str
) -> None:
    rows = read_labels(IDS / "labels.csv")
    if group == "bbt":
        files = [
            (r["file"], r["person"])
            for r in rows
            if r["file"].startswith("faceapijs/bbt_") and "group" not in r["file"]
        ]
    else:
        files = [
            (r["file"], r["person"])
            for r in rows
            if r["person"] in ("barack_obama", "joe_biden") and "partial" not in r["file"]
        ]
    e, people = _embeddings(pipeline, files)
    sim = e @ e.T
    same = np.array([[a == b for b in people] for a in people])
    off = ~np.eye(len(people), dtype=bool)
    s_same, s_diff = sim[same & off], sim[~same]
    nn = np.where(off, sim, -2).argmax(axis=1)
    rank1 = float(np.mean([people[i] == people[j] for i, j in enumerate(nn)]))
    thr = config.tracking.reid_threshold
    print(
        f"{group}: {len(people)} photos, same {s_same.mean():.2f}, different {s_diff.mean():.2f}, "
        f"rank-1 {rank1:.2%}, same>={thr}: {np.mean(s_same >= thr):.2%}, "
        f"different<{thr}: {np.mean(s_diff < thr):.2%}"
    )
    assert s_same.mean() > s_diff.mean() + 0.4
    assert rank1 >= 0.9
    assert np.mean(s_diff < thr) >= 0.99  # a stranger is almost never taken for someone else
    assert np.mean(s_same >= thr) >= 0.75


#: Accuracy floors per source (7 classes, chance 14%). Measured with the default ensemble:
#: colour photos 75%, JAFFE 74%, FER2013 64%. FER2013 labels agree with humans only ~65% and the
#: published accuracy of these two models there is 57-58% (MANIFEST.md); JAFFE poses are
#: exaggerated but the subjects are Japanese women unlike most training data. Floors sit about
#: 10 points under the measurements so a real regression (wrong crop, colour order, label map)
#: fails while normal numeric noise does not.
FLOORS = {"colour": 0.60, "jaffe": 0.62, "fer2013": 0.55}


@pytest.mark.integration
def test_expression_accuracy_per_source(pipeline: VisionPipeline, config: Config) -> None:
    hits: dict[str, list[bool]] = {}
    assert isinstance(pipeline.emotion, EmotionEnsemble)
    crop = pipeline.emotion.members[0].model.io.crop
    for r in read_labels(EXPR / "labels.csv"):
        img = imread(EXPR / r["file"])
        src = r["file"].split("/")[0]
        src = src if src in FLOORS else "colour"
        if src == "fer2013":  # already a face crop: a box whose model crop is the whole image
            h, w = img.shape[:2]
            side = w / crop
            c = (w / 2, h / 2)
            box = np.array(
                [[c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2]], np.float32
            )
            faces = FaceDetections(box, np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
        else:
            faces = _largest_face(pipeline, img)
        probs = pipeline.emotion(img, faces).probs[0]
        hits.setdefault(src, []).append(LABELS[int(np.argmax(probs))] == r["label"])
    for src, h in sorted(hits.items()):
        print(f"expression accuracy {src}: {np.mean(h):.1%} of {len(h)} (floor {FLOORS[src]:.0%})")
    for src, h in hits.items():
        assert np.mean(h) >= FLOORS[src], (src, np.mean(h))


def _va_model(path: Path) -> None:
    """A tiny real ONNX model shaped like HSEmotion enet_b0_8_va_mtl: 224² in, 8 logits + V + A."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 10), np.float32)
    w[0, 4] = 20.0  # red (RGB channel 0) -> "happiness" logit (HSEmotion index 4)
    b = np.array([0, 3, 0, 0, 0, 0, 0, 0, 0.3, -0.4], np.float32)  # else contempt; V, A
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["z"]),
        helper.make_node("Add", ["z", "B"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "va",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.integration
def test_eight_class_model_with_valence_arousal_via_manifest_only(
    tmp_path: Path, config: Config
) -> None:
    _va_model(tmp_path / "va.onnx")
    sha = sha256_file(tmp_path / "va.onnx")
    size = (tmp_path / "va.onnx").stat().st_size
    (tmp_path / "manifest.toml").write_text(
        f"""
[models.hse]
file = "va.onnx"
task = "emotion"
sha256 = "{sha}"
bytes = {size}
[models.hse.io]
input = "input"
output = "output"
layout = "NCHW"
color = "rgb"
size = [224, 224]
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
activation = "logits"
labels = ["anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
valence_index = 8
arousal_index = 9
"""
    )
    manifest = Manifest.load(tmp_path / "manifest.toml")
    store = ModelStore(tmp_path, manifest, HashCache(None))
    factory = SessionFactory(store, config.runtime)
    ens = EmotionEnsemble([Member(EmotionModel(factory.get("hse"), manifest["hse"]), 1.0)])
    assert ens.supported.all()  # contempt included
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, 160:] = (0, 0, 255)  # right half red (BGR)
    boxes = np.array([[20, 20, 140, 140], [180, 20, 300, 140]], np.float32)
    faces = FaceDetections(boxes, np.ones(2, np.float32), np.zeros((2, 5, 2), np.float32))
    out = ens(img, faces)
    assert LABELS[int(out.probs[0].argmax())] == "contempt"
    assert LABELS[int(out.probs[1].argmax())] == "happiness"
    assert np.allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
    assert not out.va_estimated
    assert np.allclose(out.valence_arousal[0], (0.3, -0.4), atol=1e-5)
