"""Fully connected layers whose input gradient reads a transposed copy of their weight.

For one image a fully connected layer is a matrix-vector product, bound by reading its weight. The forward
reads the weight row by row (x W^T); the input gradient g W reads it column by column, which torch's bf16
kernel does at two thirds of the speed (VGG-Face's fc6, 205 MB in bf16: 15-17 ms against 10 ms). A row-major
copy of W^T, made at the first backward pass, turns the gradient into the forward's kind of product: 7 ms less
per evaluation of the windowed bf16 pass (python -m engine bench: 119 -> 111 ms), for 240 MB more memory (fc6
and fc7). Only the optimisation's bf16 copy of the network uses it, and only for large layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LARGE = 1 << 20  # weights of at least this many elements (VGG-Face fc6-fc8; not dlib-resnet's descriptor layer)


class _LinearWithTransposedGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: TransposedGradLinear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.weight, layer.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return F.linear(grad, ctx.layer.weight_t()), None


class TransposedGradLinear(nn.Linear):
    """nn.Linear with frozen weights whose input gradient is F.linear(grad, W^T copy)."""

    def weight_t(self) -> torch.Tensor:
        t = self.__dict__.get("_weight_t")
        if t is None:
            t = self.__dict__["_weight_t"] = self.weight.detach().t().contiguous()
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return F.linear(x, self.weight, self.bias)
        return _LinearWithTransposedGrad.apply(x, self)


def transposed_grads(net: nn.Module, large: int = LARGE) -> nn.Module:
    """`net` with each frozen nn.Linear of at least `large` weights turned into a TransposedGradLinear (in place)."""
    for layer in net.modules():
        if type(layer) is nn.Linear and layer.weight.numel() >= large and not layer.weight.requires_grad:
            layer.__class__ = TransposedGradLinear
    return net
