"""The k nearest examples with and without an attribute (pure numpy, testable on synthetic features).

Distance = identity-feature distance + pose_weight * |yaw, pitch difference| (roll is removed by the crop).
Examples of the same person (a `person` label equal to the reference's, or an identity distance under
`same_person`) come first whatever their distance: "fix the blink from the next shot".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.bank.store import Bank
from engine.errors import EXIT_USAGE, FATError


@dataclass
class Choice:
    with_idx: np.ndarray  # bank indices, nearest first
    with_dist: np.ndarray
    without_idx: np.ndarray
    without_dist: np.ndarray
    with_same: np.ndarray | None = None  # bool per chosen face: the reference's own person (they come first)
    without_same: np.ndarray | None = None


def identity_distances(identity: np.ndarray, ref_identity: np.ndarray) -> np.ndarray:
    """Identity-feature distance of every bank face to the reference."""
    return np.linalg.norm(identity.reshape(len(identity), -1).astype(np.float32)
                          - ref_identity.reshape(1, -1).astype(np.float32), axis=1)


def distances(identity: np.ndarray, pose: np.ndarray, ref_identity: np.ndarray, ref_pose: np.ndarray,
              pose_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(total distance, identity distance) of every bank face to the reference."""
    d_id = identity_distances(identity, ref_identity)
    d_pose = np.linalg.norm(pose[:, :2] - ref_pose[None, :2], axis=1)
    return d_id + pose_weight * d_pose, d_id


def order(total: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Same person first, then by distance."""
    return np.lexsort((total, ~same))


DEFAULT_K = 5  # Deep Feature Interpolation uses 100 of CelebA; the paper's review says 5 of LFW


def nearest(bank: Bank, attribute: str, ref_identity: np.ndarray, ref_pose: np.ndarray, k: int | None,
            identity_layer: str, pose_weight: float = 1.0, same_person: float | None = None,
            person: str | None = None, exclude: np.ndarray | None = None) -> Choice:
    """`exclude` (bool, N): faces never chosen (the reference's own photo when the bank holds it). k None:
    DEFAULT_K, or as many as a side has when it has fewer (at least one); a given k must be met."""
    if attribute not in bank.attributes or not (bank.labels_of(attribute) >= 0).any():
        raise FATError(f"the bank {bank.path or ''} has no labels for {attribute!r} (it has: "
                       f"{', '.join(a for a in bank.attributes if (bank.labels_of(a) >= 0).any()) or 'none'}); "
                       "rebuild it with a --labels file that has this column.", EXIT_USAGE)
    labels = bank.labels_of(attribute)
    total, d_id = distances(bank.features[identity_layer], bank.pose, ref_identity, ref_pose, pose_weight)
    same = np.zeros(len(bank), bool)
    if same_person is not None:
        same |= d_id < same_person
    if person is not None:
        same |= np.array([e.get("person") == person for e in bank.entries], bool)
    out, own = [], []
    for value, side in ((1, "with"), (0, "without")):
        idx = np.flatnonzero((labels == value) & (True if exclude is None else ~exclude))
        if not len(idx):  # (whatever k: "lower --k" cannot help)
            shows = "show it" if value else "do not show it"
            raise FATError(f"the bank {bank.path or ''} has no face {side} {attribute!r}: add photos of faces that "
                           f"{shows} (`python -m engine bank build PHOTOS... -o BANK` adds them), labelled with "
                           "--labels where the landmark rules cannot tell (README, attribute banks).", EXIT_USAGE)
        if len(idx) < (k or 1):
            raise FATError(f"the bank {bank.path or ''} has {len(idx)} face(s) {side} {attribute!r}, fewer than "
                           f"--k {k or 1}: add photos (`python -m engine bank build ... -o BANK`) or lower --k.",
                           EXIT_USAGE)
        chosen = idx[order(total[idx], same[idx])][: k or DEFAULT_K]
        out += [chosen, total[chosen]]
        own.append(same[chosen])
    return Choice(*out, *own)
