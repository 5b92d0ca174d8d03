"""Forward passes that recompute only what changed.

During an edit the network sees images that differ from one fixed image (the start)
only inside the region: a mouth is ~17 % of VGG-Face's input. A 3x3 convolution's
output can differ only one pixel further out than its input did, a 2x2 pool's only
where its input did, so each layer is recomputed on a window (the changed box,
grown layer by layer) over the start image's stored maps, and the rest of every map
is the stored one. Gradients flow through the window only. The result equals the
full pass up to float summation order; the work drops with the region's size
(VGG-Face, mouth: ~2.5x fewer multiply-adds per evaluation).

A network opts in by naming the kind of each stage (`stage_kinds`): "conv" (3x3,
stride 1, padding 1), "pointwise", "pool" (2x2, stride 2, floor) or "global" (everything
after it sees the whole map: the fully connected layers). One image at a time (N = 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.taps import Stage, run_stages

Box = tuple[slice, slice]  # rows, columns of a map (engine/objective/losses.py: MaskedTarget.box)
FULL_AREA = 0.7  # a window over this share of a map costs as much as the whole map: compute it whole


@dataclass(frozen=True)
class Window:
    """Rows y0..y1 and columns x0..x1 (half-open) of a map."""

    y0: int
    y1: int
    x0: int
    x1: int

    def grown(self, by: int, h: int, w: int) -> Window:
        return Window(max(0, self.y0 - by), min(h, self.y1 + by), max(0, self.x0 - by), min(w, self.x1 + by))

    def halved(self, h: int, w: int) -> Window:
        return Window(self.y0 // 2, min(h, -(-self.y1 // 2)), self.x0 // 2, min(w, -(-self.x1 // 2)))

    def covers(self, h: int, w: int) -> bool:
        return (self.y1 - self.y0) * (self.x1 - self.x0) >= FULL_AREA * h * w

    def of(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., self.y0:self.y1, self.x0:self.x1]

    def inside(self, outer: Window) -> bool:
        return outer.y0 <= self.y0 and self.y1 <= outer.y1 and outer.x0 <= self.x0 and self.x1 <= outer.x1

    def relative_to(self, outer: Window) -> Window:
        """This box in the coordinates of `outer`'s own (a map holding only `outer`)."""
        return Window(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)


def changed_window(mask: torch.Tensor, margin: int = 2) -> Window | None:
    """The box of the network-size mask's support, grown by `margin` px (the resampling's reach);
    None when nothing can change."""
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    if len(ys) == 0:
        return None
    h, w = mask.shape[-2:]
    return Window(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1).grown(margin, h, w)


def _patched(base: torch.Tensor, inner: Window, current: torch.Tensor, outer: Window) -> torch.Tensor:
    """base's `outer` box with `current` (the values of `inner`, which lies inside it) written in."""
    patch = outer.of(base).clone()
    inner.relative_to(outer).of(patch).copy_(current)
    return patch


def _full(base: torch.Tensor, window: Window, current: torch.Tensor) -> torch.Tensor:
    return _patched(base, window, current, Window(0, base.shape[-2], 0, base.shape[-1]))


@dataclass(frozen=True)
class Step:
    """One stage of a windowed pass, decided once per base image. `mode`: "window" (recompute the changed box
    `inside` -> `outside`), "enter" (the stage runs on the whole map, built from the box: the fully connected
    part), "whole" (the map is whole already) or "same" (nothing changed any more: the stored map)."""

    name: str
    stage: Stage
    kind: str
    mode: str
    inside: Window | None = None
    outside: Window | None = None
    widen: bool = False  # the output box covers most of its map: continue on the whole map


class LocalForward:
    """Tapped forward passes of images equal to `base` outside `window` (network-input coordinates).

    `stages` and `kinds` describe the network (engine/models/taps.py); `base` is already normalised and in
    the precision and memory format the stages expect. Every stage output of the base is kept (no grad), and
    the window of every stage is worked out here once (`steps`), for every pass and for `layer_costs`.
    """

    def __init__(self, stages: Sequence[Stage], kinds: dict[str, str], base: torch.Tensor, window: Window,
                 taps: Iterable[str], layout: torch.memory_format = torch.contiguous_format) -> None:
        self.layout, self.taps = layout, set(taps)
        order = [n for n, _ in stages]
        through = list(stages)[:max(order.index(t) for t in self.taps) + 1]
        with torch.no_grad():
            self.base_input = base
            self.maps = run_stages(through, base, [n for n, _ in through])
        self.window = window
        self.steps = self._plan(through, kinds)

    def _plan(self, through: list[Stage], kinds: dict[str, str]) -> list[Step]:
        steps: list[Step] = []
        window: Window | None = self.window
        mode = "window"
        previous = self.base_input
        for name, stage in through:
            out = self.maps[name]
            if mode in ("whole", "same"):
                steps.append(Step(name, stage, kinds.get(name, "pointwise"), mode))
                continue
            kind = kinds[name]
            h, w = previous.shape[-2:]
            if kind == "global":
                steps.append(Step(name, stage, kind, "enter", window))
                mode = "whole"
            else:
                inside = _pool_input(window, h, w) if kind == "pool" else window
                if inside is None:  # only a row or column the pool drops had changed: nothing further does
                    steps.append(Step(name, stage, kind, "same"))
                    mode = "same"
                    continue
                outside = (inside.grown(1, h, w) if kind == "conv" else inside.halved(h // 2, w // 2)
                           if kind == "pool" else inside)
                widen = outside.covers(*out.shape[-2:])
                steps.append(Step(name, stage, kind, "window", inside, outside, widen))
                window, mode = outside, "whole" if widen else "window"
            previous = out
        return steps

    def layer_costs(self) -> list[tuple[float, float]]:
        """(multiply-adds, weight elements read) of each layer one pass runs: each convolution on its window,
        whatever runs whole at full size. For the bench's roofline."""
        costs, previous = [], self.base_input
        for step in self.steps:
            out = self.maps[step.name]
            if step.mode != "same" and (step.kind == "global" or isinstance(step.stage, nn.Linear)):
                costs.append((float(previous.numel()) * out.shape[-1], float(previous.numel()) * out.shape[-1]))
            elif step.mode != "same" and step.kind == "conv":
                box = step.outside or Window(0, out.shape[-2], 0, out.shape[-1])
                weights = 9.0 * previous.shape[1] * out.shape[1]
                costs.append((weights * (box.y1 - box.y0) * (box.x1 - box.x0), weights))
            previous = out
        return costs

    def __call__(self, x: torch.Tensor, boxes: dict[str, Box] | None = None) -> dict[str, torch.Tensor]:
        """The taps for image x (same layout as base); x outside the window is ignored (taken as base's). A tap
        named in `boxes` is returned as only that box of its map (rows, columns), which the caller reads: the
        whole map is never assembled (nor its gradient), which costs more than the window itself."""
        boxes = boxes or {}
        out: dict[str, torch.Tensor] = {}
        base, current = self.base_input, self.window.of(x)
        whole: torch.Tensor | None = None  # the full map, once the window has grown to it
        for step in self.steps:
            if step.mode == "window":
                if step.kind == "conv":
                    current = _conv_valid(step.stage, _padded_patch(base, step.inside, current, step.outside),
                                          self.layout)
                elif step.kind == "pool":
                    source = Window(2 * step.outside.y0, 2 * step.outside.y1, 2 * step.outside.x0,
                                    2 * step.outside.x1)
                    inside = step.inside
                    current = step.stage(_patched(base, inside, current[..., :inside.y1 - inside.y0,
                                                                         :inside.x1 - inside.x0], source))
                else:
                    current = step.stage(current)
                current = _DenseGradient.apply(current, self.layout)
                base = self.maps[step.name]
                if step.widen:
                    whole = _full(base, step.outside, current)
            elif step.mode == "enter":
                whole = step.stage(_full(base, step.inside, current))
            elif step.mode == "whole":
                whole = step.stage(whole)
            else:
                whole = self.maps[step.name]
            if step.name in self.taps:
                out[step.name] = _tap(whole, base, step.outside, current, boxes.get(step.name))
        return out


def _tap(whole: torch.Tensor | None, base: torch.Tensor, window: Window, current: torch.Tensor,
         box: Box | None) -> torch.Tensor:
    """A tap's map (or its `box`): the whole map where there is one, else `current` (the map's `window`) over base."""
    if whole is None and box is not None:
        wanted = Window(box[0].start, box[0].stop, box[1].start, box[1].stop)
        if wanted.inside(window):
            return wanted.relative_to(window).of(current)
    if whole is None:
        whole = _full(base, window, current)
    return whole if box is None else whole[..., box[0], box[1]]


class _DenseGradient(torch.autograd.Function):
    """The identity, whose gradient is made dense in the pass's memory layout. A windowed map's gradient arrives
    as a slice of the next layer's (the patch it was written into); elementwise backward kernels given a slice and
    a dense map of the same layout fall off their vectorised path (bf16 ReLU backward on VGG-Face's first maps:
    1.3 ms instead of 0.06 ms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        ctx.layout = layout
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.contiguous(memory_format=ctx.layout), None


def _pool_input(window: Window, h: int, w: int) -> Window | None:
    """The part of a changed box a 2x2 floor pool reads: without an odd-sized map's last row / column, which it
    drops (None: nothing left)."""
    clipped = Window(window.y0, min(window.y1, 2 * (h // 2)), window.x0, min(window.x1, 2 * (w // 2)))
    return clipped if clipped.y1 > clipped.y0 and clipped.x1 > clipped.x0 else None


def _padded_patch(base: torch.Tensor, inner: Window, current: torch.Tensor, out: Window) -> torch.Tensor:
    """The input a 3x3 valid convolution needs for output box `out`: base's box one pixel wider with `current`
    written in, zero beyond the map's edge (the network's own padding)."""
    h, w = base.shape[-2:]
    source = out.grown(1, h, w)
    patch = _patched(base, inner, current, source)
    pad = (1 - (out.x0 - source.x0), 1 - (source.x1 - out.x1), 1 - (out.y0 - source.y0), 1 - (source.y1 - out.y1))
    return F.pad(patch, pad) if any(pad) else patch


def _conv_valid(conv: nn.Conv2d, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    return F.conv2d(x.contiguous(memory_format=layout), conv.weight, conv.bias)
