"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in torch.

Rebuilt from dnn_face_recognition_ex.cpp: a 7x7/2 stem, max-pool, then residual
blocks at 35, 17, 8, 4 and 2 px, global average pool and a 256->128 linear map.
Batch norm is stored folded as per-channel affine (scale, shift). In downsampling
blocks the two branches differ in size and channels; dlib adds them by zero-padding
the smaller one at the bottom/right (it stays in the top-left corner), copied here.

Input: RGB in 0..255, (N,3,150,150); the module subtracts dlib's mean and divides
by 256 itself, so its ONNX export has the same contract as dlib.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.taps import Stage, run_stages

MEAN_RGB: tuple[float, float, float] = (122.78199768066406, 117.0009994506836, 104.2979965209961)
SCALE = 1.0 / 256.0
INPUT_SIZE = 150
# (tap name, channels, downsampling?) in data-flow order.
BLOCKS: tuple[tuple[str, int, bool], ...] = (
    ("b35_1", 32, False), ("b35_2", 32, False), ("b35_3", 32, False),
    ("b17_0", 64, True), ("b17_1", 64, False), ("b17_2", 64, False), ("b17_3", 64, False),
    ("b8_0", 128, True), ("b8_1", 128, False), ("b8_2", 128, False),
    ("b4_0", 256, True), ("b4_1", 256, False), ("b4_2", 256, False),
    ("b2_0", 256, True),
)


def tap_names() -> list[str]:
    return ["conv1", "relu1", "pool1", *(name for name, _, _ in BLOCKS), "gap", "descriptor"]


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's tt::add for tensors of different C/H/W: zero-pad both to the larger."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] == (c, h, w):
            return x
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """Folded batch norm: per-channel scale and shift, stored pre-shaped (1,C,1,1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_padded(y, skip))


class DlibResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine1 = Affine(32)
        blocks, cin = [], 32
        for _, cout, down in BLOCKS:
            blocks.append(Block(cin, cout, down))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> DlibResNet:
        with torch.device("meta"):
            model = cls()
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, assign=True)
        model.mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
        return model

    def stages(self) -> list[Stage]:
        """The network as named stages in order (tap_names() lists the same names)."""
        return [("conv1", self.conv1), ("relu1", lambda x: F.relu(self.affine1(x))),
                ("pool1", lambda x: F.max_pool2d(x, 3, 2)),
                *((name, block) for (name, _, _), block in zip(BLOCKS, self.blocks, strict=True)),
                ("gap", lambda x: x.mean(dim=(2, 3))), ("descriptor", self.fc)]

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) * SCALE

    def forward(self, image: torch.Tensor, taps: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        return run_stages(self.stages(), self.normalise(image), taps)
