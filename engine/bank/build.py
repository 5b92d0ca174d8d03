"""Building and extending a bank: detect, align, measure and featurise every face of the given photos.

Photos already in the bank (same sha256) are not processed again; faceless, too-small and unreadable
files are skipped and listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.bank.attributes import ATTRIBUTES
from engine.bank.measure import SCORES, labels_from_scores, pose, scores
from engine.bank.store import CROP_FACTOR, Bank, empty_bank
from engine.errors import FATError
from engine.face.align import template_transform, transform_points, warp_crop
from engine.face.detect import MIN_EYE_DISTANCE, Face, detect_faces, find_face
from engine.io.files import sha256_file
from engine.io.images import load_photo
from engine.models.backbone import Backbone
from engine.objective.optimise import to_network
from engine.objective.recipes import fit_to_backbone, recipe_for

IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


@dataclass
class BuildReport:
    added: int = 0  # faces
    photos: int = 0  # photos processed
    unchanged: int = 0  # photos already in the bank
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def bank_layers(spec: dict) -> dict[str, list[int]]:
    """The recipe's attribute and identity layers with their shapes."""
    recipe = fit_to_backbone(recipe_for(spec["backbone"]), spec)
    names = [*recipe.attribute_layers, *(k for k in recipe.identity_layers if k not in recipe.attribute_layers)]
    return {k: list(spec["taps"][k]) for k in names}


def new_bank(bb: Backbone) -> Bank:
    return empty_bank(bb.name, bb.spec["onnx_sha256"], bb.spec["crop_template"], bank_layers(bb.spec),
                      list(ATTRIBUTES))


def photo_files(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; folders searched (recursively) for images, in name order."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_TYPES and f.is_file())
        else:
            out.append(p)
    return out


def face_features(bb: Backbone, crop: np.ndarray, layers: Iterable[str]) -> dict[str, np.ndarray]:
    """Features of an aligned crop (any multiple of the template size), seen as the edit sees its crops."""
    t = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].float().to(bb.device)
    with torch.no_grad():
        out = bb.features_exact(to_network(t, bb.input_size), list(layers))
    return {k: v[0].detach().cpu().numpy() for k, v in out.items()}


def _faces(rgb8: np.ndarray, all_faces: bool, detector: str) -> list[Face]:
    if not all_faces:
        return [find_face(rgb8, detector)]
    faces = [f for f in detect_faces(rgb8, detector, upsample=1) if f.eye_distance >= MIN_EYE_DISTANCE]
    if not faces:
        find_face(rgb8, detector)  # raises the usual "no face" / "too small" error
    return faces


def _face_record(bb: Backbone, photo, face: Face, label: dict, layers: dict) -> dict:
    template = bb.spec["crop_template"]
    m = template_transform(face.landmarks, template)
    h, w = (int(v) * CROP_FACTOR for v in template["size"])
    crop = warp_crop(photo.rgb, m * CROP_FACTOR, (h, w))
    lm = transform_points(m, face.landmarks)
    s = scores(lm)
    measured = labels_from_scores(s)
    labels = [label.get(a, measured[a]) for a in ATTRIBUTES]
    return {"crop": np.clip(np.rint(crop), 0, 255).astype(np.uint8), "landmarks": lm.astype(np.float32),
            "pose": pose(face.landmarks), "scores": np.array([s[k] for k in SCORES], np.float32),
            "labels": np.array(labels, np.int8), "features": face_features(bb, crop, layers),
            "sources": {a: ("labels" if a in label else "measured") for a in ATTRIBUTES}}


def add_photos(bank: Bank, bb: Backbone, files: list[Path], labels: dict[str, dict] | None = None,
               all_faces: bool = False, detector: str = "hog",
               progress: Callable[[int, int, str], None] | None = None) -> BuildReport:
    """Append the faces of `files` not yet in the bank (by sha256); returns what was done."""
    report = BuildReport()
    known = {e["sha256"] for e in bank.entries}
    records: list[tuple[dict, dict]] = []
    for i, path in enumerate(files):
        if progress is not None:
            progress(i, len(files), path.name)
        try:
            digest = sha256_file(path)
        except OSError as e:
            report.skipped.append((str(path), f"unreadable ({e.strerror or e})"))
            continue
        if digest in known:
            report.unchanged += 1
            continue
        label = (labels or {}).get(path.name, {})
        try:
            photo = load_photo(path)
            faces = _faces(photo.rgb8(), all_faces, detector)
        except FATError as e:  # its message names the file too
            report.skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
            continue
        known.add(digest)
        report.photos += 1
        for n, face in enumerate(faces):
            rec = _face_record(bb, photo, face, {k: v for k, v in label.items() if k in ATTRIBUTES},
                               bank.meta["layers"])
            entry = {"file": str(path), "name": path.name, "sha256": digest, "face": n,
                     "person": label.get("person"), "label_sources": rec.pop("sources")}
            records.append((entry, rec))
    if progress is not None:
        progress(len(files), len(files), "")
    if records:
        _append(bank, records)
    report.added = len(records)
    return report


def _append(bank: Bank, records: list[tuple[dict, dict]]) -> None:
    recs = [r for _, r in records]
    bank.meta["entries"] = bank.entries + [e for e, _ in records]
    bank.crops = np.concatenate([bank.crops, np.stack([r["crop"] for r in recs])])
    bank.landmarks = np.concatenate([bank.landmarks, np.stack([r["landmarks"] for r in recs])])
    bank.pose = np.concatenate([bank.pose, np.stack([r["pose"] for r in recs])])
    bank.scores = np.concatenate([bank.scores, np.stack([r["scores"] for r in recs])])
    bank.labels = np.concatenate([bank.labels, np.stack([r["labels"] for r in recs])])
    for k in bank.features:
        new = np.stack([r["features"][k] for r in recs]).astype(np.float16)
        bank.features[k] = np.concatenate([bank.features[k], new])
