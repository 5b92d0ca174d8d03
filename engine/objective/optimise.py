"""The optimisation loop: find crop pixels whose backbone features keep the
reference's identity and take the guide's attribute inside the region.

The image is parametrised as x = init + mask * (upsample(luma) + upsample(chroma)):
only the region can change; brightness changes live on a grid coarser than the
network's input (so no pixel-level adversarial speckle) and colour changes on a
grid coarser still (the network barely constrains colour), while the fine detail of
the high-resolution initial image is kept. The network sees x area-averaged
down to its input size, so one step costs one forward and one backward pass.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch
from torch.nn import functional as F

import engine
from engine.errors import EXIT_CANCELLED, EXIT_USAGE, FATError
from engine.models.backbone import Backbone
from engine.objective.losses import TERMS, Evaluation, MaskedTarget, attribute_target
from engine.objective.recipes import Recipe


@dataclass
class Progress:
    step: int
    total: int
    losses: dict[str, float]
    elapsed: float


class CancelToken:
    """Set from any thread (a GUI's cancel button); the loop stops at the next step."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled


@dataclass
class Problem:
    backbone: Backbone
    init: torch.Tensor  # (1,3,H,W) work-resolution initial image, 0..255
    mask: torch.Tensor  # (H,W) work-resolution region mask, 0..1
    reference_features: dict[str, torch.Tensor]
    attribute_features: dict[str, torch.Tensor]  # target features (already moved by strength)
    recipe: Recipe  # every tuned number: term weights, layers, grids
    keep: torch.Tensor | None = None  # (H,W) 0..1: where the attribute itself is (the opening); change costs more
    local: bool = True  # recompute only the region's window of each feature map (same result, less work)

    # Constant per problem; computed once here rather than at every evaluation of the losses.
    @cached_property
    def layers(self) -> set[str]:
        return set(self.recipe.identity_layers) | set(self.recipe.attribute_layers)

    @cached_property
    def attribute_targets(self) -> dict[str, MaskedTarget]:
        return {k: MaskedTarget.of(self.attribute_features[k], self.mask) for k in self.recipe.attribute_layers}

    @cached_property
    def network_mask(self) -> torch.Tensor:
        return to_network(self.mask[None, None], self.backbone.input_size)[0, 0]

    @cached_property
    def features(self) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """Network-size image -> the recipe's taps. Outside the mask every image rendered here equals the
        (clamped) start, so only the region's window needs recomputing, and the attribute taps come as only the
        boxes their losses read (MaskedTarget.crop)."""
        base = to_network(self.init.clamp(0, 255), self.backbone.input_size)
        boxes = {k: t.box for k, t in self.attribute_targets.items()
                 if t.box is not None and k not in self.recipe.identity_layers}  # the identity term reads it whole
        local = self.backbone.local_features(base, self.network_mask, self.layers, boxes) if self.local else None
        return local or (lambda x_net: self.backbone.features(x_net, self.layers))

    @cached_property
    def change_cost(self) -> torch.Tensor:
        m = self.mask[None, None]
        return m if self.keep is None else m * (1 + self.recipe.keep * self.keep[None, None])


def to_network(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def targets(backbone: Backbone, reference: torch.Tensor, guide: torch.Tensor, recipe: Recipe,
            strength: float) -> tuple[dict, dict]:
    """The identity features of the reference and the attribute target, from the network the edit's passes run
    (Backbone.features_target: bf16 rounding on both sides of a bf16 edit's losses), as fp32 tensors."""
    identity_layers, attribute_layers = recipe.identity_layers, recipe.attribute_layers
    with torch.no_grad():
        layers = set(identity_layers) | set(attribute_layers)
        size = backbone.input_size
        ref = backbone.features_remembered(to_network(reference, size), layers)
        gui = backbone.features_remembered(to_network(guide, size), attribute_layers)
    return ref, attribute_target({k: ref[k] for k in attribute_layers}, gui, strength)


@lru_cache(maxsize=16)
def _axis_matrix(n: int, m: int, mode: str, device: torch.device) -> torch.Tensor:
    """(n, m): F.interpolate from n to m samples along one axis, as a matrix (the columns of the identity,
    interpolated)."""
    eye = torch.eye(n, device=device).reshape(n, 1, n, 1)
    return F.interpolate(eye, size=(m, 1), mode=mode, align_corners=False)[:, 0, :, 0].contiguous()


def upsample(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """F.interpolate(x, size, mode) for the separable modes (bilinear, bicubic) as two small matrix products:
    the same values (to float rounding), and at the work crop a tenth of the time forward and backward, which
    the optimisation pays at every evaluation (bicubic 448 px: 4.9 ms against 0.4 ms)."""
    h, w = x.shape[-2:]
    return _axis_matrix(h, size[0], mode, x.device).t() @ x @ _axis_matrix(w, size[1], mode, x.device)


LUMA_UNIT, CHROMA_UNIT = 32.0, 8.0  # pixel units per unit of the variables (keeps gradients O(1))


def render(problem: Problem, luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    size = problem.init.shape[-2:]
    up = upsample(luma * LUMA_UNIT, size, "bicubic")
    if problem.recipe.chroma_grid > 0:
        up = up + upsample(chroma * CHROMA_UNIT, size, "bilinear")
    return (problem.init + problem.mask * up).clamp(0, 255)


def loss_terms(problem: Problem, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each term of the recipe with a non-zero weight, weighted, by name (engine/objective/losses.py TERMS)."""
    x_net = to_network(x, problem.backbone.input_size)
    evaluation = Evaluation(problem, x, x_net, problem.features(x_net))
    return {name: TERMS[name](evaluation, weight) for name, weight in problem.recipe.weights.items() if weight}


def stalled(bests: list[float], evaluations: int, share: float) -> bool:
    """Diminishing returns: the last `evaluations` evaluations lowered the best loss by no more than `share` of what
    the whole stage has gained (bests[i] = the best loss after evaluation i; share 0 never stops)."""
    if share <= 0 or len(bests) <= evaluations:
        return False
    return bests[-1 - evaluations] - bests[-1] <= share * (bests[0] - bests[-1])


class _StageOver(Exception):
    """Raised out of an evaluation to end a stage: its budget is spent, or its loss stalled (Recipe.stall)."""


class _Stage:
    """One coarse-to-fine stage: at most `n` evaluations of the losses over (luma, chroma), ending early once the
    best loss stalls (Recipe.stall); the stage's result is the best point it evaluated."""

    def __init__(self, problem: Problem, luma: torch.Tensor, chroma: torch.Tensor, n: int, method: str,
                 history: list[dict], on_step: Callable[[dict, int], None], cancel: CancelToken | None) -> None:
        self.problem, self.n, self.history, self.on_step, self.cancel = problem, n, history, on_step, cancel
        self.luma = luma.detach().requires_grad_(True)
        self.chroma = chroma.detach().requires_grad_(True)
        self.left = n
        self.best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        self.bests: list[float] = []  # the best loss after each evaluation of this stage
        params = [self.luma, self.chroma]
        if method == "lbfgs":
            self.opt = torch.optim.LBFGS(params, lr=1.0, max_iter=n, max_eval=n, history_size=20,
                                         line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-9)
        elif method == "adam":
            self.opt = torch.optim.Adam(params, lr=0.05)
        else:
            raise FATError(f"unknown optimiser {method!r}; use lbfgs or adam.", EXIT_USAGE)
        self.method = method

    def closure(self) -> torch.Tensor:
        if self.cancel is not None and self.cancel.cancelled:
            raise FATError("cancelled.", EXIT_CANCELLED)
        self.opt.zero_grad()
        terms = loss_terms(self.problem, render(self.problem, self.luma, self.chroma))
        total = sum(terms.values())
        total.backward()
        record = {**{k: float(v.detach()) for k, v in terms.items()}, "total": float(total.detach())}
        self.history.append(record)
        self.left -= 1
        stalled_now = self._remember(record["total"])
        stop = stalled_now or self.left <= 0  # at the budget: L-BFGS's line search would overrun max_eval
        self.on_step(record, max(self.left, 0) if stop else 0)
        if stop:
            raise _StageOver
        return total

    def _remember(self, value: float) -> bool:
        """Keep the best point; True once the recent evaluations gained too little (Recipe.stall)."""
        if self.best is None or value < self.best[0]:
            self.best = (value, self.luma.detach().clone(), self.chroma.detach().clone())
        self.bests.append(self.best[0])
        recipe = self.problem.recipe
        return stalled(self.bests, int(recipe.stall_evaluations), recipe.stall)

    def run(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(loss, luma, chroma) of the best evaluated point (every stage evaluates at least once)."""
        try:
            if self.method == "lbfgs":
                self.opt.step(self.closure)  # L-BFGS counts evaluations itself (max_eval)
            else:
                while self.left > 0:
                    self.opt.step(self.closure)
        except _StageOver:
            pass
        return self.best


def skip_dynamo_import() -> None:
    """torch.optim wraps Optimizer's methods in torch._disable_dynamo, whose first call imports torch._dynamo only to
    mark them "never compile": 1.1 s of a new process's first edit here, for torch.compile, which nothing here uses.
    Each wrapper caches its answer on the wrapped function; giving it the function itself (what "disabled" means
    without torch.compile) skips the import for L-BFGS, the default optimiser. It changes torch for the whole
    process, so only `python -m engine` calls it (engine.own_process), never a program that imports the engine. A
    torch whose wrappers differ is left as it is: the import then happens as before. tests/test_speed_paths.py checks
    that a new `python -m engine edit` skips it."""
    if "torch._dynamo" in sys.modules:  # imported already: nothing to save
        return
    try:
        marker = torch._disable_dynamo(lambda: None).__code__
    except (AttributeError, TypeError):
        return
    for klass in torch.optim.LBFGS.__mro__:
        for value in vars(klass).values():
            if getattr(value, "__code__", None) is marker and not hasattr(value.__wrapped__, "__dynamo_disable"):
                value.__wrapped__.__dynamo_disable = value.__wrapped__


def optimise(problem: Problem, iterations: int = 60, method: str = "lbfgs", seed: int = 0,
             progress: Callable[[Progress], None] | None = None, cancel: CancelToken | None = None,
             stages: tuple[float, ...] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Coarse-to-fine: the brightness change lives at stage * network size; returns (x, history).

    One iteration is one evaluation (a forward and a backward pass), whichever optimiser; `iterations` is the
    most there will be (a stage whose loss stalls ends early: Recipe.stall).
    """
    torch.manual_seed(seed)
    if engine.own_process:
        skip_dynamo_import()
    stages = stages or (problem.recipe.luma_grid / 2, problem.recipe.luma_grid)
    h, w = problem.backbone.input_size
    device = problem.init.device
    cg = problem.recipe.chroma_grid
    chroma = torch.zeros(1, 3, max(2, round(h * cg)), max(2, round(w * cg)), device=device)
    luma = None
    history: list[dict] = []
    t0 = time.perf_counter()

    skipped = 0  # evaluations of stalled stages that will not run: the progress total shrinks by them

    def on_step(record: dict, skipping: int) -> None:
        nonlocal skipped
        skipped += skipping
        if progress is not None:
            progress(Progress(len(history), iterations - skipped, record, time.perf_counter() - t0))

    k = len(stages)
    per_stage = [iterations * (i + 1) // k - iterations * i // k for i in range(k)]  # sums to iterations
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None  # over all stages: a finer start can be worse
    for scale, n in zip(stages, per_stage, strict=True):
        size = (max(4, round(h * scale)), max(4, round(w * scale)))
        if luma is None:
            luma = torch.zeros(1, 1, *size, device=device)
        else:
            luma = F.interpolate(luma.detach(), size=size, mode="bilinear", align_corners=False)
        if n > 0:  # fewer iterations than stages: some have none
            stage_best = _Stage(problem, luma, chroma, n, method, history, on_step, cancel).run()
            _, luma, chroma = stage_best  # the next stage starts from this one's best
            if best is None or stage_best[0] < best[0]:
                best = stage_best
    if best is not None:
        luma, chroma = best[1], best[2]
    with torch.no_grad():
        return render(problem, luma, chroma), history


def solve(problem: Problem, iterations: int, method: str = "lbfgs", seed: int = 0,
          progress: Callable[[Progress], None] | None = None,
          cancel: CancelToken | None = None) -> tuple[torch.Tensor, list[dict]]:
    """optimise(), or the start itself at 0 iterations (a composite-only edit); either way the progress callback
    hears a last report with as many steps as ran (a stalled stage ends early), so a progress bar reaches its end."""
    t = time.perf_counter()
    if iterations > 0:
        x, history = optimise(problem, iterations, method, seed, progress, cancel)
    else:
        x, history = problem.init, []
    if progress is not None:
        progress(Progress(len(history), len(history), history[-1] if history else {}, time.perf_counter() - t))
    return x, history
