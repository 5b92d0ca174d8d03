"""Large fully connected layers of the bf16 copy, run by oneDNN on pre-packed weights.

For one image a fully connected layer is a matrix-vector product, bound by reading its weight. torch's bf16
product on a plain row-major weight reads VGG-Face's fc6 (205 MB) at 16-20 GB/s on this 2-core machine; the
same oneDNN product on a weight reordered once into its blocked layout (what torch's own compiler does when it
freezes a model) reads it at ~36 GB/s, with bit-identical results: fc6 13 -> 6 ms, fc7 1.6 -> 0.3 ms. The
input gradient g W is the same kind of product on W^T, packed likewise; W^T comes row-major from the user cache
(a transposed copy in a new process costs 0.18 s, mapping the cached one a fraction of that).

Only the optimisation's bf16 copy on the CPU uses this (the packing ops are oneDNN's, `torch.ops.mkldnn`), only
for large layers, and each layer packs on first use (a pass that never reaches fc8 never packs it), or on a
helper thread that a bf16 edit starts once its backbone is ready (`pack_in_background`). Memory: the
packed W and W^T of fc6 and fc7 are ~480 MB of process memory (the plain bf16 weights stay file-backed pages of
the user cache). Where the ops are missing or cannot pack here (a torch build without oneDNN, a CPU whose oneDNN
has no bf16 reorder) the layers stay plain nn.Linear.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

LARGE = 1 << 20  # weights of at least this many elements (VGG-Face fc6-fc8; not dlib-resnet's descriptor layer)


@functools.cache
def packing_available() -> bool:
    """Whether this torch and CPU pack and run a bf16 weight (tried once on a tiny one)."""
    mkldnn = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise") and mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        weight = torch.ones(8, 16, dtype=torch.bfloat16)
        out = _product(torch.ones(1, 16, dtype=torch.bfloat16), _pack(weight), None)
    except (RuntimeError, NotImplementedError):
        return False
    return bool(torch.all(out == 16))


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 1)  # laid out for one image at a time


def _product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


class _PackedLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: PackedLinear) -> torch.Tensor:
        ctx.layer = layer
        return _product(x, layer.packed(), layer.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _product(grad, ctx.layer.packed_transposed(), None), None


class PackedLinear(nn.Linear):
    """nn.Linear with frozen bf16 CPU weights whose products (forward, and input gradient through W^T) run on
    weights packed at first use. Any other input (another dtype or device, more than two dimensions) takes
    nn.Linear's own path."""

    def packed(self) -> torch.Tensor:
        with self.__dict__["_packing"][0]:  # once, whichever thread asks first (a Dask worker may run several)
            if "_packed" not in self.__dict__:
                self.__dict__["_packed"] = _pack(self.weight.detach())
            return self.__dict__["_packed"]

    def packed_transposed(self) -> torch.Tensor:
        with self.__dict__["_packing"][1]:
            if "_packed_t" not in self.__dict__:
                source = self.__dict__.get("_transposed")  # dropped once used: a failed read is tried again
                self.__dict__["_packed_t"] = _pack(source(self) if source else self.weight.detach().t())
                self.__dict__.pop("_transposed", None)
            return self.__dict__["_packed_t"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype or x.device.type != "cpu" or x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and x.requires_grad:
            return _PackedLinearFunction.apply(x, self)
        return _product(x, self.packed(), self.bias)


def pack_in_background(modules: Iterable[nn.Module]) -> threading.Thread | None:
    """Pack each PackedLinear of `modules` not packed yet (W, then W^T) on a helper thread, and return it (None:
    nothing to pack). A new process packs VGG-Face's fc6 and fc7 in ~0.35 s; begun as soon as the backbone is ready,
    that runs while the edit decodes, finds and aligns the faces (numpy and OpenCV, mostly outside the GIL), and the
    first pass that needs a layer waits on that layer's lock for the rest. A failure on the thread is not raised and
    changes nothing (a layer and its transposed weight's loader are only marked done once they succeed): the pass
    packs the layer itself and meets the error there. The process waits for the thread before it exits (atexit),
    so a command that fails early never ends while oneDNN is still reordering a weight."""
    layers = [m for m in modules if isinstance(m, PackedLinear)
              and not ("_packed" in m.__dict__ and "_packed_t" in m.__dict__)]
    if not layers:
        return None

    def pack() -> None:
        try:
            for layer in layers:
                layer.packed()
            for layer in layers:
                layer.packed_transposed()
        except Exception:  # noqa: BLE001  (the pass that needs the layer packs it and reports)
            pass

    thread = threading.Thread(target=pack, name="pack-bf16-weights", daemon=True)
    thread.start()
    atexit.register(thread.join, 30.0)
    return thread


def large_linears(net: nn.Module, large: int | None = None) -> dict[str, nn.Linear]:
    """The frozen bf16 CPU nn.Linear layers (not subclasses with their own forward) of `net` with at least `large`
    weights (default LARGE, read at call time), by module name."""
    large = LARGE if large is None else large
    return {name: layer for name, layer in net.named_modules()
            if type(layer) in (nn.Linear, PackedLinear) and layer.weight.numel() >= large
            and not layer.weight.requires_grad and layer.weight.dtype == torch.bfloat16
            and layer.weight.device.type == "cpu"}


def transposed_weights(net: nn.Module, large: int | None = None) -> dict[str, torch.Tensor]:
    """Row-major W^T of each of large_linears(net): what packed_linears' `transposed` returns (cached on disk by
    the backbone)."""
    return {name: layer.weight.detach().t().contiguous() for name, layer in large_linears(net, large).items()}


def packed_linears(net: nn.Module, transposed: Callable[[], dict[str, torch.Tensor]] | None = None,
                   large: int | None = None) -> nn.Module:
    """`net` with each of large_linears(net) turned into a PackedLinear (in place), where oneDNN can pack.
    `transposed()` gives transposed_weights(net), called at most once, at the first backward pass that needs one;
    a layer it lacks (or gives in another shape) transposes its own weight, as every layer does without it."""
    if not packing_available():
        return net
    memo: dict[str, torch.Tensor] = {}
    loader = [transposed]  # emptied once called: the layers do not keep the loader (and what it holds) alive

    guard = threading.Lock()

    def source(name: str, layer: nn.Linear) -> torch.Tensor:
        with guard:
            if loader:
                memo.update(loader[0]())
                loader.clear()  # only once it has read them: a failure is met again by the next pass, not hidden
            found = memo.pop(name, None)  # the packed copy replaces it
        weight = layer.weight.detach()
        return found if found is not None and found.shape == weight.shape[::-1] else weight.t()

    for name, layer in large_linears(net, large).items():
        layer.__class__ = PackedLinear
        layer.__dict__["_packing"] = (threading.Lock(), threading.Lock())  # the weight's, its transpose's
        if transposed is not None:
            layer.__dict__["_transposed"] = functools.partial(source, name)  # called with the layer
    return net
