"""One tapped forward pass for every backbone: the architecture is a list of
named stages (torchvision's vgg.py keeps its layers as data the same way), and a
forward runs them in order, keeping the requested taps and stopping after the
deepest one, so a shallow tap never pays for the rest of the network."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

Stage = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


def run_stages(stages: Sequence[Stage], x: torch.Tensor, taps: Iterable[str] | None) -> dict[str, torch.Tensor]:
    order = [name for name, _ in stages]
    wanted = set(order) if taps is None else set(taps)
    unknown = wanted - set(order)
    if unknown:
        raise KeyError(f"unknown tap(s) {sorted(unknown)}; this network has {order}")
    last = max(order.index(t) for t in wanted)
    out: dict[str, torch.Tensor] = {}
    for name, stage in stages[:last + 1]:
        x = stage(x)
        if name in wanted:
            out[name] = x
    return out
