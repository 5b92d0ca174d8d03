"""The bank file: one .npz (numpy's zip of .npy arrays; loads with allow_pickle=False) holding

- `meta`: a 0-d text array, JSON: format "fat-bank", version, backbone name, its ONNX sha256, the crop
  template, crop_factor, the feature layers and their shapes, the attribute names and where each face's
  labels came from, and per face {file (path as given), name, sha256, face index, person};
- `crops`: uint8 (N, h, w, 3), the aligned crop at crop_factor x the template size (the start image's pixels);
- `landmarks`: float32 (N, 68, 2) in template pixels (crop_factor 1);
- `pose`: float32 (N, 3) yaw, pitch, roll proxies (engine/bank/measure.py);
- `scores`: float32 (N, len(measure.SCORES)) the landmark measurements;
- `labels`: int8 (N, attributes) 1 / 0, -1 = unknown;
- `feat_LAYER`: float16 (N, ...) the backbone's features of the crop at its input size, for the recipe's
  attribute and identity layers.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EXIT_BACKBONE, EXIT_INPUT, FATError, option_ref
from engine.io.files import atomic_write

FORMAT, VERSION = "fat-bank", 1
CROP_FACTOR = 2  # crops are stored at twice the template size (300 px for dlib-resnet): enough for 1-4x work


@dataclass
class Bank:
    meta: dict
    crops: np.ndarray
    landmarks: np.ndarray
    pose: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def entries(self) -> list[dict]:
        return self.meta["entries"]

    @property
    def attributes(self) -> list[str]:
        return self.meta["attributes"]

    def labels_of(self, attribute: str) -> np.ndarray:
        return self.labels[:, self.attributes.index(attribute)]

    def subset(self, keep: np.ndarray) -> Bank:
        """The faces where `keep` (bool, N) is true (the bench leaves a person out this way)."""
        idx = np.flatnonzero(keep)
        meta = {**self.meta, "entries": [self.entries[i] for i in idx]}
        return Bank(meta, self.crops[idx], self.landmarks[idx], self.pose[idx], self.scores[idx], self.labels[idx],
                    {k: v[idx] for k, v in self.features.items()}, self.path)


def empty_bank(backbone: str, onnx_sha256: str, template: dict, layers: dict[str, list[int]],
               attributes: list[str]) -> Bank:
    h, w = (int(v) * CROP_FACTOR for v in template["size"])
    meta = {"format": FORMAT, "version": VERSION, "backbone": backbone, "onnx_sha256": onnx_sha256,
            "crop_template": template, "crop_factor": CROP_FACTOR, "layers": layers, "attributes": attributes,
            "entries": []}
    return Bank(meta, np.zeros((0, h, w, 3), np.uint8), np.zeros((0, 68, 2), np.float32),
                np.zeros((0, 3), np.float32), np.zeros((0, 5), np.float32), np.zeros((0, len(attributes)), np.int8),
                {k: np.zeros((0, *s), np.float16) for k, s in layers.items()})


def save_bank(bank: Bank, path: Path) -> None:
    arrays = {"meta": np.array(json.dumps(bank.meta)), "crops": bank.crops, "landmarks": bank.landmarks,
              "pose": bank.pose, "scores": bank.scores, "labels": bank.labels,
              **{f"feat_{k}": v.astype(np.float16) for k, v in bank.features.items()}}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(Path(path), write)


def _damaged(path: Path, why: str) -> FATError:
    return FATError(f"bank {path}: damaged or not a bank file ({why}); move it away (a build adds to the file "
                    f"it is given) and build it again: `python -m engine bank build PHOTOS... -o {path}`.",
                    EXIT_INPUT)


def check_bank_path(path: Path) -> None:
    """The bank file exists (cheap: a command checks it before the network loads)."""
    if not Path(path).is_file():
        raise FATError(f"bank {path}: no such file. Build one with `python -m engine bank build PHOTOS... -o "
                       f"{path}` (or run `python3 install.py` for the default bank).", EXIT_INPUT)


def load_bank(path: Path) -> Bank:
    path = Path(path)
    check_bank_path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as e:
        raise _damaged(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _damaged(path, "no fat-bank header")
    if meta.get("version") != VERSION:
        raise _damaged(path, f"format version {meta.get('version')}, this engine reads {VERSION}")
    try:
        features = {k: data[f"feat_{k}"] for k in meta["layers"]}
        bank = Bank(meta, data["crops"], data["landmarks"], data["pose"], data["scores"], data["labels"], features,
                    path)
        n = len(meta["entries"])
        arrays = [bank.crops, bank.landmarks, bank.pose, bank.scores, bank.labels, *features.values()]
        if any(len(a) != n for a in arrays) or bank.labels.shape[1] != len(meta["attributes"]):
            raise ValueError("array lengths disagree with the face list")
    except (KeyError, ValueError, IndexError) as e:
        raise _damaged(path, f"{type(e).__name__}: {e}") from None
    return bank


def check_backbone(bank: Bank, spec: dict) -> None:
    """A bank's features mean something only for the exact network export that computed them."""
    where = bank.path or "bank"
    if bank.meta["backbone"] != spec["backbone"]:
        raise FATError(f"bank {where} was built with backbone {bank.meta['backbone']!r}, this edit uses "
                       f"{spec['backbone']!r}: rebuild the bank with `python -m engine bank build ... --backbone "
                       f"{spec['backbone']}`, or edit with {option_ref('backbone', bank.meta['backbone'])}.",
                       EXIT_BACKBONE)
    if bank.meta["onnx_sha256"] != spec["onnx_sha256"]:
        raise FATError(f"bank {where} was built with another export of {spec['backbone']} (ONNX sha256 "
                       f"{bank.meta['onnx_sha256'][:12]}..., installed {spec['onnx_sha256'][:12]}...): rebuild the "
                       "bank (`python -m engine bank build`).", EXIT_BACKBONE)
