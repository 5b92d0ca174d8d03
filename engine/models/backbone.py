"""A backbone = one ONNX file + its JSON spec; the engine treats all alike.

The ONNX file is the single artifact: the torch module (for analytic gradients)
is rebuilt from its initializers, and ONNX Runtime (the fast path for
gradient-free feature extraction) runs the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import EXIT_BACKBONE, EXIT_USAGE, FATError, option_ref
from engine.io.files import verified_sha256
from engine.models.dlib_resnet import DlibResNet
from engine.models.packed_linear import pack_in_background, packed_linears, transposed_weights
from engine.models.runtime import ort_session
from engine.models.state_cache import cached_state
from engine.models.taps import run_stages
from engine.models.vggface import VGGFace
from engine.models.window import Box, LocalForward, changed_window
from engine.options import BACKBONES
from engine.project import models_dir

ARCHITECTURES: dict[str, Callable[[dict[str, torch.Tensor]], nn.Module]] = {
    "vggface16": VGGFace.from_state_dict,
    "dlib_resnet_v1": DlibResNet.from_state_dict,
}
KNOWN = BACKBONES  # preference order when none is named


VGGFACE_WEIGHTS_PAGE = "http://www.robots.ox.ac.uk/~vgg/software/vgg_face/"


def install_hint(spec_path: Path | str | None = None) -> str:
    """What creates the missing/damaged backbone: VGG-Face needs weights the user downloads (no command can make
    them); dlib-resnet is exported offline by install.py."""
    if spec_path is not None and Path(spec_path).stem == "vggface":
        return (f"VGG-Face needs its published weights, which no command here can fetch for you: download one of "
                f"the files (e.g. from {VGGFACE_WEIGHTS_PAGE}; README: Backbones and VGG-Face weights) and run "
                f"`python3 install.py --weights FILE`, or use {option_ref('backbone', 'dlib-resnet')}.")
    return "Run `python3 install.py` in the project folder to create it (dlib-resnet needs no download)."


FEATURE_MEMORY = 8  # remembered target passes per model (features_remembered); a few MB each for VGG-Face


@dataclass
class Backbone:
    spec: dict
    onnx_path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # of the differentiable path: fp32, or bf16 (engine/models/runtime.py)

    @property
    def name(self) -> str:
        return self.spec["backbone"]

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.spec["input"]["size"]
        return int(h), int(w)

    @property
    def taps(self) -> list[str]:
        return list(self.spec["taps"])

    @cached_property
    def module(self) -> nn.Module:
        prefix = self.spec.get("initializer_prefix", "net.")
        state = cached_state(verified_sha256(self.onnx_path), prefix, lambda: initializer_state(self.onnx_path, prefix))
        build = ARCHITECTURES.get(self.spec["architecture"])
        if build is None:
            raise FATError(f"{self.onnx_path}: unknown architecture {self.spec['architecture']!r} in its spec.",
                           EXIT_BACKBONE)
        try:
            net = build(state)
        except (RuntimeError, KeyError) as e:
            raise FATError(f"{self.onnx_path}: weights do not fit architecture {self.spec['architecture']} "
                           f"({str(e).splitlines()[0]}). Re-export it.", EXIT_BACKBONE) from None
        return _frozen(net.eval().to(self.device))

    @cached_property
    def module_bf16(self) -> nn.Module:
        """A bfloat16, channels-last copy for the optimisation's forward + backward passes (half the memory
        traffic, the CPU's bf16 matrix units; the large fully connected layers on packed weights,
        models/packed_linear.py); normalisation stays in fp32 (engine/models/runtime.py). Built from bf16 casts of
        the weights, so no second fp32 copy of the network is ever held; the casts (and the large layers'
        transposed weights) are kept beside the fp32 copy in the user cache (models/state_cache.py), so a new
        process maps them instead of reading and converting VGG-Face's 550 MB (0.1 s)."""
        digest, prefix = verified_sha256(self.onnx_path), self.spec.get("initializer_prefix", "net.")
        state = cached_state(digest, prefix,
                             lambda: {k: v.to(torch.bfloat16) for k, v in self.module.state_dict().items()}, "bf16")
        net = _frozen(ARCHITECTURES[self.spec["architecture"]](state).eval().to(self.device,
                                                                             memory_format=torch.channels_last))
        return packed_linears(net, lambda: cached_state(digest, prefix, lambda: transposed_weights(net), "bf16-t"))

    def start_packing(self, taps: Iterable[str]) -> None:
        """For a bf16 edit on the CPU: build the bf16 copy and begin packing the large layers its passes to `taps`
        run (those named as stages up to the deepest tap: VGG-Face's fc6 and fc7, not fc8) on a helper thread
        (models/packed_linear.py pack_in_background), so that a new process packs while it reads and aligns the
        photos rather than at its first pass."""
        if self.precision != "bf16" or self.device.type != "cpu":
            return
        net = self.module_bf16
        order = [name for name, _ in net.stages()]
        try:
            reached = set(order[:max(order.index(t) for t in taps) + 1])
        except ValueError:  # a tap the network does not have: the pass will say so
            return
        pack_in_background(layer for name, layer in net.named_modules() if name in reached)

    @cached_property
    def session(self):
        return ort_session(self.onnx_path, self.device)

    @property
    def _net(self) -> nn.Module:
        """The module the differentiable path runs (bf16 channels-last, or the fp32 one)."""
        return self.module_bf16 if self.precision == "bf16" else self.module

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 -> the network's normalised input, in the differentiable path's precision and layout."""
        x = self.module.normalise(image)
        if self.precision != "bf16":
            return x
        return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def features(self, image: torch.Tensor, taps: Iterable[str]) -> dict[str, torch.Tensor]:
        """Differentiable taps (fp32 tensors) for RGB 0..255 images (N,3,H,W) at the input size."""
        out = run_stages(self._net.stages(), self.prepare(image), list(taps))
        return {k: v.float() for k, v in out.items()}

    def local_pass(self, base: torch.Tensor, mask: torch.Tensor, taps: Iterable[str]) -> LocalForward | None:
        """The windowed pass (engine/models/window.py) for images that equal `base` wherever the network-size
        `mask` is 0. None where it saves nothing: networks that do not describe their stages' geometry
        (dlib-resnet's residual blocks), or a window over most of the input."""
        window = changed_window(mask)
        kinds = getattr(self._net, "stage_kinds", None)
        if window is None or kinds is None or window.covers(*self.input_size):
            return None
        layout = torch.channels_last if self.precision == "bf16" else torch.contiguous_format
        return LocalForward(self._net.stages(), kinds(), self.prepare(base), window, taps, layout)

    def local_features(self, base: torch.Tensor, mask: torch.Tensor, taps: Iterable[str],
                       boxes: dict[str, Box] | None = None) -> Callable[[torch.Tensor], dict[str, torch.Tensor]] | None:
        """`features` for images that equal `base` outside the mask (an edit's region), recomputing only the
        changed window of each map: the same taps, less work; a tap named in `boxes` comes as only that box of
        its map (what a masked loss reads). None where `local_pass` is."""
        local = self.local_pass(base, mask, taps)
        if local is None:
            return None
        return lambda image: {k: v.float() for k, v in local(self.prepare(image), boxes).items()}

    def features_exact(self, image: torch.Tensor, taps: Iterable[str]) -> dict[str, torch.Tensor]:
        """fp32 taps without a gradient (targets): ONNX Runtime when its session is already open (a warm
        engine; opening it for two passes costs more than it saves), else the torch module."""
        taps = list(taps)
        if "session" in self.__dict__ and self.device.type == "cpu":
            out = self.features_fast(image.detach().numpy(), taps)
            return {k: torch.from_numpy(v) for k, v in out.items()}
        with torch.no_grad():
            return self.module(image, taps)

    def features_target(self, image: torch.Tensor, taps: Iterable[str]) -> dict[str, torch.Tensor]:
        """An edit's target taps (no gradient) from the network its passes run: features_exact for an fp32 edit;
        for a bf16 one the bf16 network itself, so both sides of each loss carry the same rounding (the start's
        identity term is exactly zero, as in fp32) and a new photo's pass costs VGG-Face's bf16 forward (90 ms)
        instead of ONNX Runtime's fp32 one (155 ms) or, in a new process, torch's fp32 one with its weights' first
        read (0.3 s)."""
        if self.precision != "bf16":
            return self.features_exact(image, taps)
        with torch.no_grad():
            return self.features(image, taps)

    def features_remembered(self, image: torch.Tensor, taps: Iterable[str]) -> dict[str, torch.Tensor]:
        """features_target, remembered by content and precision for this model: a guide shared by many edits (a
        batch, a warm engine) or a reference edited at several strengths costs one pass. The last FEATURE_MEMORY
        results."""
        taps = sorted(set(taps))
        array = np.ascontiguousarray(image.detach().cpu().numpy())
        key = (hashlib.blake2b(array.data, digest_size=16).hexdigest(), array.shape, tuple(taps), self.precision)
        memory = self.__dict__.setdefault("_remembered", OrderedDict())
        if key not in memory:
            memory[key] = self.features_target(image, taps)
            while len(memory) > FEATURE_MEMORY:
                memory.popitem(last=False)
        memory.move_to_end(key)
        return dict(memory[key])

    def features_fast(self, image: np.ndarray, taps: Iterable[str]) -> dict[str, np.ndarray]:
        """The same taps through ONNX Runtime, for when no gradient is needed."""
        taps = list(taps)
        out = self.session.run(taps, {self.spec["input"]["name"]: np.ascontiguousarray(image, dtype=np.float32)})
        return dict(zip(taps, out, strict=True))


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def initializer_state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The weights, as tensors sharing the parsed file's bytes where it stores them raw (every exporter of ours):
    no copy per tensor, which was 1.2 s of VGG-Face's 2.2 s load. Those tensors are read-only views; the modules
    built from them are frozen (no weight is ever written)."""
    import onnx  # only here: with the weights copy in the user cache, a new process never parses the file
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    state = {}
    for init in model.graph.initializer:
        if not init.name.startswith(prefix):
            continue
        if init.HasField("raw_data") and init.data_location != onnx.TensorProto.EXTERNAL:
            array = np.frombuffer(init.raw_data, dtype=helper.tensor_dtype_to_np_dtype(init.data_type))
            with warnings.catch_warnings():  # "non-writable array": by design, see above
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array.reshape(tuple(init.dims)))
        else:
            tensor = torch.from_numpy(numpy_helper.to_array(init).copy())
        state[init.name[len(prefix):]] = tensor
    return state


def read_spec(spec_path: Path, check_hash: bool = True) -> tuple[dict, Path]:
    try:
        spec = json.loads(Path(spec_path).read_text())
    except FileNotFoundError:
        raise FATError(f"{spec_path}: backbone spec not found. {install_hint(spec_path)}", EXIT_BACKBONE) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FATError(f"{spec_path}: not a valid backbone spec ({e}). {install_hint(spec_path)}",
                       EXIT_BACKBONE) from None
    required = ("backbone", "architecture", "onnx", "onnx_sha256", "input", "taps", "crop_template")
    missing = [k for k in required if k not in spec]
    if missing:
        raise FATError(f"{spec_path}: backbone spec lacks {missing}. {install_hint(spec_path)}", EXIT_BACKBONE)
    onnx_path = Path(spec_path).parent / spec["onnx"]
    if not onnx_path.exists():
        raise FATError(f"{onnx_path}: ONNX file named by {spec_path} is missing. {install_hint(spec_path)}",
                       EXIT_BACKBONE)
    if check_hash:
        digest = verified_sha256(onnx_path)
        if digest != spec["onnx_sha256"]:
            raise FATError(f"{onnx_path}: sha256 {digest[:12]}... does not match its spec "
                           f"({spec['onnx_sha256'][:12]}...); the file was changed or damaged after export. "
                           f"Re-export it. {install_hint(spec_path)}", EXIT_BACKBONE)
    return spec, onnx_path


def available_backbones(directory: Path | None = None) -> list[str]:
    directory = directory or models_dir()
    return [n for n in KNOWN if (directory / f"{n}.json").exists()]


def resolve_name(name: str | None, directory: Path | None = None) -> str:
    """VGG-Face when installed, else dlib-resnet; an explicit name or spec path wins."""
    if name:
        return name
    found = available_backbones(directory)
    if not found:
        raise FATError(f"no backbone installed in {directory or models_dir()}. {install_hint()}", EXIT_BACKBONE)
    return found[0]


def resolve_path(name: str | None, directory: Path | None = None) -> Path:
    """The spec file of a backbone name (vggface, dlib-resnet), a spec path, or None (the best installed)."""
    name = resolve_name(name, directory)
    if name.endswith(".json") or os.sep in name:
        return Path(name)
    if name in KNOWN:
        return (directory or models_dir()) / f"{name}.json"
    raise FATError(f"unknown backbone {name!r}; choose one of {', '.join(KNOWN)} or give a spec .json path.",
                   EXIT_USAGE)


def load_backbone(name: str | None = None, device: torch.device | None = None,
                  directory: Path | None = None, precision: str = "fp32") -> Backbone:
    """`name` is a backbone name (vggface, dlib-resnet) or a path to a spec JSON."""
    spec, onnx_path = read_spec(resolve_path(name, directory))
    return Backbone(spec, onnx_path, device or torch.device("cpu"), precision)
