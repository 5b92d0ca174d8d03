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


def attribute_loss(features: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   weights: dict[str, float], mask: torch.Tensor) -> torch.Tensor:
    return sum(w * feature_distance(features[k], target[k], mask) for k, w in weights.items())


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
    n, c, h, w = f.shape
    m = _as_map_mask(mask, f)
    v = (f * m if m is not None else f).reshape(n, c, h * w)
    norm = (m.sum() if m is not None else torch.tensor(float(h * w))) + EPS
    return v @ v.transpose(1, 2) / norm


def gram_loss(features: dict[str, torch.Tensor], target: dict[str, torch.Tensor], weights: dict[str, float],
              mask: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), device=mask.device)
    for k, w in weights.items():
        if features[k].dim() == 4:
            g, t = gram(features[k], mask), gram(target[k], mask)
            total = total + w * (g - t).square().mean() / (t.square().mean() + EPS)
    return total


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
    "attribute": lambda e, w: w * attribute_loss(e.features, e.problem.attribute_features,
                                                 e.problem.recipe.attribute_layers, e.problem.mask),
    "tv": lambda e, w: w * total_variation(e.x_net, e.problem.network_mask),
    "colour": lambda e, w: w * colour_anchor(e.x, e.problem.init, e.problem.mask, e.problem.recipe.colour_lowpass),
    "change": lambda e, w: change_cost(e.x, e.problem.init, e.problem.change_cost, e.problem.mask, w),
    "gram": lambda e, w: w * gram_loss(e.features, e.problem.attribute_features, e.problem.recipe.attribute_layers,
                                       e.problem.mask),
}
