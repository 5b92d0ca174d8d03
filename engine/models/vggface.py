"""VGG-Face (Parkhi et al. 2015) as a plain torch module with named feature taps.

Layout as torchvision's VGG16 but with the layer names of the published models
(conv1_1 ... conv5_3, fc6, fc7, fc8), so weights from every published format map
onto one canonical state dict. The module takes RGB images in 0..255 (N,3,224,224)
and subtracts the training mean itself, so its ONNX export has the same contract.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.taps import Stage, run_stages

# (block, convs in block, channels)
VGG_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 2, 64),
    (2, 2, 128),
    (3, 3, 256),
    (4, 3, 512),
    (5, 3, 512),
)
MEAN_RGB: tuple[float, float, float] = (129.186279296875, 104.76238250732422, 93.59396362304688)
NUM_CLASSES = 2622
INPUT_SIZE = 224
FC_NAMES = ("fc6", "fc7", "fc8")


def conv_names() -> list[str]:
    return [f"conv{b}_{i}" for b, n, _ in VGG_BLOCKS for i in range(1, n + 1)]


def tap_names(include_fc: bool = True) -> list[str]:
    """Every tap in network order: conv, relu after each conv, pool after each block."""
    names: list[str] = []
    for b, n, _ in VGG_BLOCKS:
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    if include_fc:
        names += ["fc6", "relu6", "fc7", "relu7", "fc8"]
    return names


def canonical_shapes(widths: tuple[int, ...] | None = None, fc_width: int = 4096,
                     num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the canonical state dict; `widths` shrinks channels for tests."""
    widths = widths or tuple(c for _, _, c in VGG_BLOCKS)
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 3
    for (b, n, _), cout in zip(VGG_BLOCKS, widths, strict=True):
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}.weight"] = (cout, cin, 3, 3)
            shapes[f"conv{b}_{i}.bias"] = (cout,)
            cin = cout
    shapes["fc6.weight"] = (fc_width, cin * 7 * 7)
    shapes["fc6.bias"] = (fc_width,)
    shapes["fc7.weight"] = (fc_width, fc_width)
    shapes["fc7.bias"] = (fc_width,)
    shapes["fc8.weight"] = (num_classes, fc_width)
    shapes["fc8.bias"] = (num_classes,)
    return shapes


class VGGFace(nn.Module):
    """VGG-Face; `forward` returns the requested taps by layer name."""

    def __init__(self, widths: tuple[int, ...] | None = None, fc_width: int = 4096,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.widths = widths or tuple(c for _, _, c in VGG_BLOCKS)
        cin = 3
        for (b, n, _), cout in zip(VGG_BLOCKS, self.widths, strict=True):
            for i in range(1, n + 1):
                self.add_module(f"conv{b}_{i}", nn.Conv2d(cin, cout, 3, padding=1))
                cin = cout
        self.fc6 = nn.Linear(cin * 7 * 7, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> VGGFace:
        """Build a model whose widths match `state` (full size or a small test net)."""
        widths = tuple(int(state[f"conv{b}_1.weight"].shape[0]) for b, _, _ in VGG_BLOCKS)
        with torch.device("meta"):  # no throw-away random init: 550 MB saved at full size
            model = cls(widths, int(state["fc6.weight"].shape[0]), int(state["fc8.weight"].shape[0]))
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, assign=True)
        model.mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
        return model

    def stages(self) -> list[Stage]:
        """The network as named stages in order (tap_names() lists the same names)."""
        out: list[Stage] = []
        for b, n, _ in VGG_BLOCKS:
            for i in range(1, n + 1):
                out += [(f"conv{b}_{i}", getattr(self, f"conv{b}_{i}")), (f"relu{b}_{i}", F.relu)]
            out.append((f"pool{b}", lambda x: F.max_pool2d(x, 2, 2)))
        out += [("fc6", lambda x: self.fc6(torch.flatten(x, 1))), ("relu6", F.relu), ("fc7", self.fc7),
                ("relu7", F.relu), ("fc8", self.fc8)]
        return out

    @staticmethod
    def stage_kinds() -> dict[str, str]:
        """What each stage does to space, for forwards that recompute only a changed window
        (engine/models/window.py): 3x3 convolutions, ReLUs, 2x2 pools, then the fully connected layers."""
        kinds = {n: "conv" if n.startswith("conv") else "pool" if n.startswith("pool") else "pointwise"
                 for n in tap_names(include_fc=False)}
        return {**kinds, "fc6": "global"}

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return image - self.mean

    def forward(self, image: torch.Tensor, taps: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        return run_stages(self.stages(), self.normalise(image), taps)
