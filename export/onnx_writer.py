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
from engine.io.files import atomic_write, sha256_file
from engine.models.runtime import ort_session
from export.commit import commit, spec_path_for, staging, write_json
from export.onnx_stream import save_with_initializers

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
    """Export with parameter names kept as initializer names (prefixed `net.`).

    The graph is traced without its weights (export_params=False) and the weights
    are then added as initializers straight from the module's tensors: this keeps
    one copy fewer of a 550 MB network in memory than a normal export.
    keep_initializers_as_inputs=True turns off the exporter's merging of parameters with
    equal values (two all-zero biases would otherwise become one graph input, and the
    engine needs every parameter under its own name).
    """
    net = net.eval()
    dummy = torch.zeros(1, 3, *input_size)
    wrapped = _Taps(net, taps)
    params = {name: p.detach() for name, p in wrapped.named_parameters()}

    def export(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, dummy, str(tmp), input_names=["image"], output_names=taps,
                              opset_version=OPSET, dynamo=False, do_constant_folding=False, export_params=False,
                              keep_initializers_as_inputs=True,
                              dynamic_axes={"image": {0: "batch"}, **{t: {0: "batch"} for t in taps}})
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)  # the structure, with the weights still as graph inputs
        graph_inputs = {i.name for i in model.graph.input}
        if graph_inputs != set(params) | {"image"}:
            raise RuntimeError(f"ONNX graph inputs and module parameters differ: {sorted(graph_inputs ^ set(params))}")
        kept = [i for i in model.graph.input if i.name == "image"]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        with open(tmp, "wb") as f:
            save_with_initializers(model, ((n, t.numpy()) for n, t in params.items()), f)

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
    """Max abs and relative difference between torch and ONNX Runtime per tap.

    One image at a time, so that a full-size VGG-Face's 36 taps stay small in memory.
    """
    session = ort_session(onnx_path, lean=True)
    worst: dict[str, list[float]] = {t: [0.0, 0.0] for t in taps}
    for i in range(len(images)):
        x = images[i:i + 1]
        ort_out = session.run(taps, {"image": x})
        with torch.no_grad():
            ref = net.eval()(torch.from_numpy(x), taps)
        for name, o in zip(taps, ort_out, strict=True):
            r = ref[name].numpy()
            worst[name][0] = max(worst[name][0], float(np.abs(o - r).max()))
            worst[name][1] = max(worst[name][1], float(np.abs(r).max()))
        del ort_out, ref
    return {t: {"max_abs_diff": d, "max_rel_diff": d / max(m, 1e-12)} for t, (d, m) in worst.items()}


def export_backbone(net: nn.Module, *, taps: list[str], input_size: tuple[int, int], out: Path,
                    spec: dict, real_images: list[np.ndarray], rel_tolerance: float = 1e-4,
                    log=print) -> dict:
    """Export and verify `out` + `out.with_suffix('.json')`; returns the spec.

    Both are written and verified in a staging folder and only then put in place
    (export/commit.py): an error, Ctrl-C or kill leaves the previous pair usable.
    """
    out = Path(out)
    with staging(out) as stage:
        staged = stage / out.name
        t0 = time.perf_counter()
        write_onnx(net, taps, input_size, staged)
        log(f"  wrote ONNX ({staged.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        report = verify(net, staged, taps, verification_images(input_size, real_images))
        worst = max(report.items(), key=lambda kv: kv[1]["max_rel_diff"])
        log(f"  verified {len(taps)} taps against torch on {2 + len(real_images)} images: worst {worst[0]} "
            f"max abs diff {worst[1]['max_abs_diff']:.2e} (relative {worst[1]['max_rel_diff']:.2e})")
        if worst[1]["max_rel_diff"] > rel_tolerance:
            raise FATError(f"ONNX export of {spec['backbone']} does not match torch at tap {worst[0]} "
                           f"(relative difference {worst[1]['max_rel_diff']:.2e}); this is a bug, please report "
                           f"it. {out} was left as it was.", EXIT_BACKBONE)
        full = {
            "spec_version": SPEC_VERSION,
            **spec,
            "onnx": out.name,
            "onnx_sha256": sha256_file(staged),
            "opset": OPSET,
            "initializer_prefix": PREFIX,
            "taps": tap_shapes(net, taps, input_size),
            "verification": {"images": 2 + len(real_images), "per_tap": report},
        }
        staged_spec = stage / spec_path_for(out).name
        write_json(staged_spec, full)
        commit(staged, staged_spec, out, stage)
    log(f"  installed {out} and its spec {spec_path_for(out)}")
    return full
