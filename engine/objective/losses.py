"""Loss terms on backbone feature maps and pixels: pure, differentiable functions.

Each feature term is normalised by the target's energy so that layer weights mean
the same thing on every layer and backbone. The objective is the weighted sum of the
named TERMS at the bottom (weights from the backbone's recipe): a new term is one
function and one entry there, plus its weight in engine/objective/recipes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from engine.face.masks import resample

if TYPE_CHECKING:
    from engine.objective.optimise import Problem

EPS = 1e-8


def _as_map_mask(mask: torch.Tensor | None, feature: torch.Tensor) -> torch.Tensor | None:
    if mask is None or feature.dim() != 4:
        return None
    return resample(mask, tuple(feature.shape[-2:]))


def mask_box(mask: torch.Tensor, feature: torch.Tensor) -> tuple[slice, slice] | None:
    """Rows and columns of the box of the mask's support at a spatial feature map's size (what a masked loss on
    it reads); None for a vector feature or an empty mask."""
    m = _as_map_mask(mask, feature)
    if m is None:
        return None
    ys, xs = torch.nonzero(m[0, 0] > 0, as_tuple=True)
    return (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)) if len(ys) else None


def feature_distance(f: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference (inside the mask for spatial maps) / mean target energy."""
    diff = (f - target).square()
    energy = target.square()
    m = _as_map_mask(mask, f)
    if m is None:
        return diff.mean() / (energy.mean() + EPS)
    return (diff * m).sum() / ((energy * m).sum() + EPS)


def identity_loss(features: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                  weights: dict[str, float]) -> torch.Tensor:
    return sum(w * feature_distance(features[k], reference[k]) for k, w in weights.items())


@dataclass(frozen=True)
class MaskedTarget:
    """A feature target where the mask reaches: the box of the mask's support at the map's size, the target and the
    mask inside it, and the target's masked energy (the distance's denominator). Constant per problem, so each
    evaluation reads only the box (a mouth is about a fifth of a map): `distance` equals
    feature_distance(f, target, mask)."""

    target: torch.Tensor
    mask: torch.Tensor | None  # (1, 1, h, w) inside the box; None for a vector (fc) target: no mask applies
    box: tuple[slice, slice] | None
    energy: torch.Tensor

    @classmethod
    def of(cls, target: torch.Tensor, mask: torch.Tensor) -> MaskedTarget:
        m = _as_map_mask(mask, target)
        if m is None:
            return cls(target, None, None, target.square().mean() + EPS)
        box = mask_box(mask, target)
        target, m = (target[..., box[0], box[1]].contiguous(), m[..., box[0], box[1]].contiguous()) if box else (
            target, m)
        return cls(target, m, box, (target.square() * m).sum() + EPS)

    def crop(self, f: torch.Tensor) -> torch.Tensor:
        """The box of map f; f may be the box already (a windowed pass returns only it: Problem.features)."""
        if self.box is None or f.shape[-2:] == self.target.shape[-2:]:
            return f
        return f[..., self.box[0], self.box[1]]

    def distance(self, f: torch.Tensor) -> torch.Tensor:
        diff = (self.crop(f) - self.target).square()
        return diff.mean() / self.energy if self.mask is None else (diff * self.mask).sum() / self.energy


def attribute_loss(features: dict[str, torch.Tensor], targets: dict[str, MaskedTarget],
                   weights: dict[str, float]) -> torch.Tensor:
    return sum(w * targets[k].distance(features[k]) for k, w in weights.items())


def attribute_target(reference: dict[str, torch.Tensor], guide: dict[str, torch.Tensor],
                     strength: float) -> dict[str, torch.Tensor]:
    """Move the reference's features towards the guide's by `strength` (1 = the guide's)."""
    return {k: reference[k] + strength * (guide[k] - reference[k]) for k in guide}


def total_variation(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute neighbour difference per 0..255 unit, inside the mask."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
    if mask is None:
        return (dx.mean() + dy.mean()) / 255.0
    m = mask.reshape(1, 1, *mask.shape[-2:])
    return ((dx * m[..., :, 1:]).sum() / (m.sum() * 3 + EPS) + (dy * m[..., 1:, :]).sum() / (m.sum() * 3 + EPS)) / 255.0


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool2d(x, factor, factor, ceil_mode=True) if factor > 1 else x


def colour_anchor(x: torch.Tensor, anchor: torch.Tensor, mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Hold the low frequencies (colour, shading) of x to the anchor's inside the mask."""
    m = low_pass(mask.reshape(1, 1, *mask.shape[-2:]), factor)
    d = (low_pass(x, factor) - low_pass(anchor, factor)).square() * m
    return d.sum() / (m.sum() * 3 * 255.0**2 + EPS)


def gram(f: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Channel correlations of f weighted by a mask already at f's size (1, 1, h, w)."""
    n, c, h, w = f.shape
    v = (f * mask if mask is not None else f).reshape(n, c, h * w)
    norm = (mask.sum() if mask is not None else torch.tensor(float(h * w))) + EPS
    return v @ v.transpose(1, 2) / norm


def gram_loss(features: dict[str, torch.Tensor], targets: dict[str, MaskedTarget],
              weights: dict[str, float]) -> torch.Tensor:
    terms = []
    for k, w in weights.items():
        target = targets[k]
        if target.target.dim() == 4:
            g, t = gram(target.crop(features[k]), target.mask), gram(target.target, target.mask)
            terms.append(w * (g - t).square().mean() / (t.square().mean() + EPS))
    return sum(terms) if terms else torch.zeros(())


def change_cost(x: torch.Tensor, start: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor,
                weight: float = 1.0) -> torch.Tensor:
    """L2 on the change itself (dearer where `cost` is higher): stay near the start unless a loss needs otherwise.
    The weight is applied before the normalisation (the order the recipe was tuned with)."""
    return weight * ((x - start).square() * cost).sum() / (mask.sum() * 3 * 255.0**2 + EPS)


@dataclass
class Evaluation:
    """What every term sees at one evaluation: the work-resolution image, its network-size copy, its features."""

    problem: Problem
    x: torch.Tensor
    x_net: torch.Tensor
    features: dict[str, torch.Tensor]


# name -> weighted term (evaluation, the recipe's weight of the same name); evaluated in this order, 0 = off.
TERMS: dict[str, Callable[[Evaluation, float], torch.Tensor]] = {
    "identity": lambda e, w: w * identity_loss(e.features, e.problem.reference_features,
                                               e.problem.recipe.identity_layers),
    "attribute": lambda e, w: w * attribute_loss(e.features, e.problem.attribute_targets,
                                                 e.problem.recipe.attribute_layers),
    "tv": lambda e, w: w * total_variation(e.x_net, e.problem.network_mask),
    "colour": lambda e, w: w * colour_anchor(e.x, e.problem.init, e.problem.mask, e.problem.recipe.colour_lowpass),
    "change": lambda e, w: change_cost(e.x, e.problem.init, e.problem.change_cost, e.problem.mask, w),
    "gram": lambda e, w: w * gram_loss(e.features, e.problem.attribute_targets, e.problem.recipe.attribute_layers),
}
