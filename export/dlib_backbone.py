"""dlib's face-recognition .dat -> canonical torch state dict -> ONNX + spec."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.errors import EXIT_INPUT, FATError
from engine.io.files import sha256_file
from engine.models.dlib_resnet import BLOCKS, INPUT_SIZE, MEAN_RGB, SCALE, DlibResNet, tap_names
from export.dlib_dat import DlibNet, Layer, read_dat

RESIDUAL = ["marker", "con", "affine", "relu", "con", "affine", "add_prev", "relu"]
RESIDUAL_DOWN = ["marker", "con", "affine", "relu", "con", "affine", "marker", "marker", "avg_pool",
                 "add_prev", "relu"]
STEM = ["input", "con", "affine", "relu", "max_pool"]
HEAD = ["avg_pool", "fc"]


def expected_kinds() -> list[str]:
    kinds = list(STEM)
    for _, _, down in BLOCKS:
        kinds += RESIDUAL_DOWN if down else RESIDUAL
    return kinds + HEAD


def default_dat_path() -> Path:
    from engine.face import dlib_files as dlib_models

    return dlib_models.recognition_resnet()


def _affine(layer: Layer, prefix: str) -> dict[str, np.ndarray]:
    g, b = layer.arrays["gamma"], layer.arrays["beta"]
    return {f"{prefix}.scale": g.reshape(1, g.size, 1, 1), f"{prefix}.shift": b.reshape(1, b.size, 1, 1)}


def canonical_dlib(net: DlibNet, path: Path) -> dict[str, np.ndarray]:
    kinds = [layer.kind for layer in net.layers]
    if kinds != expected_kinds():
        raise FATError(f"{path}: the network's layers do not match dlib_face_recognition_resnet_model_v1 "
                       f"({len(kinds)} layers read, {len(expected_kinds())} expected).", EXIT_INPUT)
    inp = net.layers[0].params
    if tuple(inp["size"]) != (INPUT_SIZE, INPUT_SIZE) or not np.allclose(inp["mean_rgb"], MEAN_RGB, atol=1e-3):
        raise FATError(f"{path}: unexpected input layer {inp}.", EXIT_INPUT)
    convs = [layer for layer in net.layers if layer.kind == "con"]
    affines = [layer for layer in net.layers if layer.kind == "affine"]
    state = {"conv1.weight": convs[0].arrays["weight"], "conv1.bias": convs[0].arrays["bias"]}
    state.update(_affine(affines[0], "affine1"))
    for i in range(len(BLOCKS)):
        for j in (1, 2):
            c, a = convs[1 + 2 * i + j - 1], affines[1 + 2 * i + j - 1]
            state[f"blocks.{i}.conv{j}.weight"] = c.arrays["weight"]
            state[f"blocks.{i}.conv{j}.bias"] = c.arrays["bias"]
            state.update(_affine(a, f"blocks.{i}.affine{j}"))
    fc = net.layers[-1].arrays["weight"]
    expected = expected_shapes()
    if fc.size != math.prod(expected["fc.weight"]):
        raise FATError(f"{path}: the final fc layer has {fc.size} weights, expected 256 x 128.", EXIT_INPUT)
    state["fc.weight"] = np.ascontiguousarray(fc.reshape(256, 128).T)
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise FATError(f"{path}: {key} has shape {got}, expected {shape} for "
                           "dlib_face_recognition_resnet_model_v1 (a different or damaged network).", EXIT_INPUT)
        if not np.isfinite(state[key]).all():
            raise FATError(f"{path}: {key} contains NaN or infinite values (damaged file).", EXIT_INPUT)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


@lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter's shape in engine/models/dlib_resnet.py (built on the meta device: no memory)."""
    import torch

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in DlibResNet().state_dict().items()}


def load_canonical(path: Path) -> dict[str, np.ndarray]:
    return canonical_dlib(read_dat(path), path)


def build_model(state: dict[str, np.ndarray]) -> DlibResNet:
    import torch

    return DlibResNet.from_state_dict({k: torch.from_numpy(v) for k, v in state.items()}).eval()


def dlib_spec(path: Path) -> dict:
    return {
        "backbone": "dlib-resnet",
        "architecture": "dlib_resnet_v1",
        "source": {"format": "dlib", "files": [{"name": path.name, "sha256": sha256_file(path)}]},
        "input": {"name": "image", "size": [INPUT_SIZE, INPUT_SIZE], "channel_order": "RGB",
                  "range": [0, 255], "mean": list(MEAN_RGB), "std": [1 / SCALE] * 3, "scale": SCALE,
                  "normalisation_in_graph": True},
        "crop_template": {"kind": "dlib_chip", "size": [INPUT_SIZE, INPUT_SIZE], "padding": 0.25},
        "descriptor_tap": "descriptor",
    }


def dlib_taps() -> list[str]:
    return tap_names()
