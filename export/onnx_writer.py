"""Write a backbone's torch module to ONNX with every tap as a named output,
write its JSON spec, and verify ONNX Runtime against torch tap by tap."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.errors import EXIT_BACKBONE, FATError
from engine.fileio import atomic_write, atomic_write_json, sha256_file
from engine.runtime import ort_session

OPSET = 17
SPEC_VERSION = 1
PREFIX = "net."


class _Taps(nn.Module):
    """Wraps a backbone so that ONNX sees a tuple of its taps, in order."""

    def __init__(self, net: nn.Module, taps: list[str]) -> None:
        super().__init__()
        self.net = net
        self.taps = taps

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image, self.taps)
        return tuple(out[t] for t in self.taps)


def write_onnx(net: nn.Module, taps: list[str], input_size: tuple[int, int], out: Path) -> None:
    """Export with parameter names kept as initializer names (prefixed `net.`)."""
    net = net.eval()
    dummy = torch.zeros(1, 3, *input_size)

    def export(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Taps(net, taps), dummy, str(tmp), input_names=["image"], output_names=taps,
                              opset_version=OPSET, dynamo=False, do_constant_folding=False,
                              dynamic_axes={"image": {0: "batch"}, **{t: {0: "batch"} for t in taps}})
        onnx.checker.check_model(str(tmp))

    atomic_write(out, export)


def tap_shapes(net: nn.Module, taps: list[str], input_size: tuple[int, int]) -> dict[str, list[int]]:
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, *input_size), taps)
    return {t: list(out[t].shape[1:]) for t in taps}


def verification_images(input_size: tuple[int, int], real: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Two uniform-noise images in 0..255 plus the given real images (H,W,3 uint8)."""
    rng = np.random.default_rng(seed)
    imgs = [rng.uniform(0, 255, (3, *input_size)).astype(np.float32) for _ in range(2)]
    for r in real:
        from PIL import Image

        im = Image.fromarray(r).resize(input_size[::-1], Image.Resampling.BICUBIC)
        imgs.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1).copy())
    return np.stack(imgs)


def verify(net: nn.Module, onnx_path: Path, taps: list[str], images: np.ndarray) -> dict[str, dict[str, float]]:
    """Max abs and relative difference between torch and ONNX Runtime per tap."""
    session = ort_session(onnx_path)
    ort_out = session.run(taps, {"image": images})
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(images), taps)
    report: dict[str, dict[str, float]] = {}
    for name, o in zip(taps, ort_out, strict=True):
        r = ref[name].numpy()
        diff = float(np.abs(o - r).max())
        report[name] = {"max_abs_diff": diff, "max_rel_diff": diff / max(float(np.abs(r).max()), 1e-12)}
    return report


def export_backbone(net: nn.Module, *, taps: list[str], input_size: tuple[int, int], out: Path,
                    spec: dict, real_images: list[np.ndarray], rel_tolerance: float = 1e-4,
                    log=print) -> dict:
    """Export, verify and write `out` + `out.with_suffix('.json')`; returns the spec."""
    t0 = time.perf_counter()
    write_onnx(net, taps, input_size, out)
    log(f"  wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    report = verify(net, out, taps, verification_images(input_size, real_images))
    worst = max(report.items(), key=lambda kv: kv[1]["max_rel_diff"])
    log(f"  verified {len(taps)} taps against torch on {2 + len(real_images)} images: "
        f"worst {worst[0]} max abs diff {worst[1]['max_abs_diff']:.2e} (relative {worst[1]['max_rel_diff']:.2e})")
    if worst[1]["max_rel_diff"] > rel_tolerance:
        out.unlink(missing_ok=True)
        raise FATError(f"ONNX export of {spec['backbone']} does not match torch at tap {worst[0]} "
                       f"(relative difference {worst[1]['max_rel_diff']:.2e}); this is a bug, please report it.",
                       EXIT_BACKBONE)
    full = {
        "spec_version": SPEC_VERSION,
        **spec,
        "onnx": out.name,
        "onnx_sha256": sha256_file(out),
        "opset": OPSET,
        "initializer_prefix": PREFIX,
        "taps": tap_shapes(net, taps, input_size),
        "verification": {"images": 2 + len(real_images), "per_tap": report},
    }
    atomic_write_json(spec_path_for(out), full)
    return full


def spec_path_for(onnx_path: Path) -> Path:
    return Path(onnx_path).with_suffix(".json")
