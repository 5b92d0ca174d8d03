"""One canonical VGG-Face state dict from any reader's output.

Canonical = torch layout, RGB input order for conv1_1, fc6 applied to an NCHW
flatten. Structure is the only integrity check available (the publishers give
no checksums), so it is strict: every layer, every shape, 2622 classes.
"""

from __future__ import annotations

import numpy as np

from engine.models.vggface import FC_NAMES, NUM_CLASSES, VGG_BLOCKS, canonical_shapes, conv_names
from export.formats.common import RawWeights, bad_file

EXPECTED_KEYS = [f"{n}.{p}" for n in conv_names() + list(FC_NAMES) for p in ("weight", "bias")]


def canonical_vggface(raw: RawWeights) -> dict[str, np.ndarray]:
    path = raw.sources[0]
    missing = [k for k in EXPECTED_KEYS if k not in raw.arrays]
    if missing:
        found = sorted({k.split(".")[0] for k in raw.arrays})
        raise bad_file(path, f"is missing VGG-Face layers {sorted({k.split('.')[0] for k in missing})} "
                             f"(found {found[:12]}{'...' if len(found) > 12 else ''}); it is not VGG-Face "
                             "or is truncated")
    state = {k: raw.arrays[k] for k in EXPECTED_KEYS}
    first = state["conv1_1.weight"]
    if first.ndim != 4 or first.shape[1] != 3:
        raise bad_file(path, f"conv1_1.weight has shape {tuple(first.shape)}, expected (C, 3, 3, 3)")
    widths = tuple(int(state[f"conv{b}_1.weight"].shape[0]) for b, _, _ in VGG_BLOCKS)
    expected = canonical_shapes(widths, int(state["fc6.weight"].shape[0]), NUM_CLASSES)
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise bad_file(path, f"{key} has shape {got}, expected {shape} for VGG-Face"
                                 + (" (fc8 must have 2622 outputs)" if key.startswith("fc8") else ""))
        if not np.isfinite(state[key]).all():
            raise bad_file(path, f"{key} contains NaN or infinite values (corrupt file)")
    if raw.channel_order == "BGR":
        state["conv1_1.weight"] = np.ascontiguousarray(first[:, ::-1])
    return state
