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
    Window(inner.y0 - outer.y0, inner.y1 - outer.y0, inner.x0 - outer.x0, inner.x1 - outer.x0).of(patch).copy_(current)
    return patch


def _full(base: torch.Tensor, window: Window, current: torch.Tensor) -> torch.Tensor:
    return _patched(base, window, current, Window(0, base.shape[-2], 0, base.shape[-1]))


class LocalForward:
    """Tapped forward passes of images equal to `base` outside `window` (network-input coordinates).

    `stages` and `kinds` describe the network (engine/models/taps.py); `base` is already normalised and in
    the precision and memory format the stages expect. Every stage output of the base is kept (no grad).
    """

    def __init__(self, stages: Sequence[Stage], kinds: dict[str, str], base: torch.Tensor, window: Window,
                 taps: Iterable[str], layout: torch.memory_format = torch.contiguous_format) -> None:
        self.stages, self.kinds, self.window, self.layout = list(stages), kinds, window, layout
        self.taps = set(taps)
        with torch.no_grad():
            self.base_input = base
            self.maps = run_stages(self.stages, base, None if not self.taps else self._through())

    def _through(self) -> list[str]:
        order = [n for n, _ in self.stages]
        return order[:max(order.index(t) for t in self.taps) + 1]

    def multiply_adds(self) -> float:
        """Multiply-adds of one pass (each convolution on its window, whatever runs whole at full size), for
        the bench's roofline estimate."""
        total, window, whole = 0.0, self.window, False
        previous = self.base_input
        for name, stage in self.stages[:len(self._through())]:
            out = self.maps[name]
            kind = self.kinds.get(name) if whole else self.kinds[name]  # past "global": the fully connected part
            if kind == "global" or isinstance(stage, nn.Linear):
                whole = True
                total += float(previous.numel()) * out.shape[-1]
            elif kind == "conv":
                window = window.grown(1, *out.shape[-2:])
                area = out.shape[-2] * out.shape[-1] if whole else (window.y1 - window.y0) * (window.x1 - window.x0)
                total += 9.0 * previous.shape[1] * out.shape[1] * area
            elif kind == "pool":
                clipped, _ = _pooled_part(window, previous, *previous.shape[-2:])
                window = clipped.halved(*out.shape[-2:]) if clipped is not None else Window(0, 0, 0, 0)
            whole = whole or window.covers(*out.shape[-2:])
            previous = out
        return total

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The taps for image x (same layout as base); x outside the window is ignored (taken as base's)."""
        out: dict[str, torch.Tensor] = {}
        window, base = self.window, self.base_input
        current = window.of(x)
        whole: torch.Tensor | None = None  # set once the window has grown to the whole map
        for name, stage in self.stages[:len(self._through())]:
            if whole is None:
                kind = self.kinds[name]
                h, w = base.shape[-2:]
                if kind == "conv":
                    grown = window.grown(1, h, w)
                    current = _conv_valid(stage, _padded_patch(base, window, current, grown), self.layout)
                    window = grown
                elif kind == "pool":
                    window, current = _pooled_part(window, current, h, w)
                    if window is None:  # only a row or column the pool drops had changed: nothing further does
                        whole = self.maps[name]
                    else:
                        halved = window.halved(h // 2, w // 2)
                        source = Window(2 * halved.y0, 2 * halved.y1, 2 * halved.x0, 2 * halved.x1)
                        current = stage(_patched(base, window, current, source))
                        window = halved
                elif kind == "pointwise":
                    current = stage(current)
                else:  # global: the rest needs the whole map
                    whole = stage(_full(base, window, current))
                base = self.maps[name]
                if whole is None and window.covers(*base.shape[-2:]):
                    whole = _full(base, window, current)
            else:
                whole = stage(whole)
            if name in self.taps:
                out[name] = whole if whole is not None else _full(base, window, current)
        return out


def _pooled_part(window: Window, current: torch.Tensor, h: int, w: int) -> tuple[Window | None, torch.Tensor]:
    """The window without the last row / column of an odd-sized map, which a 2x2 floor pool drops."""
    eh, ew = 2 * (h // 2), 2 * (w // 2)
    if window.y1 <= eh and window.x1 <= ew:
        return window, current
    clipped = Window(window.y0, min(window.y1, eh), window.x0, min(window.x1, ew))
    if clipped.y1 <= clipped.y0 or clipped.x1 <= clipped.x0:
        return None, current
    return clipped, current[..., :clipped.y1 - window.y0, :clipped.x1 - window.x0]


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
