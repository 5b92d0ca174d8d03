"""Every tuned number of the objective, one recipe per backbone.

Standard library only, so options (`--set NAME=VALUE`) are checked before torch
loads. A recipe holds the loss-term weights (names from engine/objective/losses.py
TERMS), the layers each feature term reads, the change parametrisation, and the
start image's compositing numbers. `--set` reaches every number here:
`identity=5`, `luma_grid=0.25`, `attribute_layers.b35_3=0.5`, `core_start=0.6`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from engine.errors import EXIT_BACKBONE, EXIT_USAGE, FATError, option_ref

SET = option_ref("overrides")  # --set on the command line, overrides= in the Python API

LAYER_TABLES = ("identity_layers", "attribute_layers")
WHOLE_NUMBERS = ("colour_lowpass", "fuse", "stall_evaluations")
MAX_NUMBER = 1e6  # no tuned number is near this; nan / inf / 1e308 would paste black patches


@dataclass(frozen=True)
class Recipe:
    # Loss-term weights, by term name (engine/objective/losses.py TERMS); 0 switches a term off.
    weights: dict[str, float]
    # Per-layer weights inside the feature terms. Identity on the descriptor, never on deep
    # spatial maps (they encode the closed mouth and fight the edit); attribute on mid-level maps.
    identity_layers: dict[str, float]
    attribute_layers: dict[str, float]
    luma_grid: float = 0.125  # finest brightness-change grid, as a fraction of the network input
    chroma_grid: float = 0.0  # colour-change grid (same units); 0 keeps the start image's colours
    keep: float = 10.0  # extra change cost where the guide's attribute itself is (the region's keep part)
    colour_lowpass: int = 8  # the colour anchor compares x and the start image averaged over this many px
    core_start: float = 0.7  # composite start: mask level where the guide's own pixels begin to replace
    core_width: float = 0.3  #   the Poisson-blended edge, fully at core_start + core_width
    chroma_gain_min: float = 0.5  # colour match: the guide's chroma spread may be scaled this far down
    chroma_gain_max: float = 2.0  #   ...and up, to the reference's
    # a region with `pixels` (engine/face/regions.py): outside that part, the guide's band between these two
    # Gaussian scales (x crop width) over the reference; finer is skin texture and stubble, coarser is shading,
    # beards and moustaches (chosen by eye on the smile pairs of bench/quality.py: 0.05 kept a moustache)
    band_fine: float = 0.006
    band_coarse: float = 0.03
    pose_weight: float = 1.0  # attribute banks: k-NN distance = identity distance + this x (yaw, pitch) distance
    fuse: float = 1.0  # attribute banks: how many nearest examples' regions are averaged into the start image
    # attribute banks: 1 = the region of the reference and of the example together, 0 = the reference's alone.
    # 1 opened 14/22 mouths and made 8/15 faces smile, but kept mobileface >= 0.75 in 11/22 and 9/15; 0: 11/22 and
    # 5/15, identity 17/22 and 14/15 (bench/bank_quality.py): identity first
    region_union: float = 0.0
    # Diminishing returns: a stage of the optimisation ends once its last `stall_evaluations` evaluations lowered the
    # best loss by no more than `stall` x what the stage has gained so far (engine/objective/optimise.py stalled).
    # 0 runs every evaluation.
    stall: float = 0.0
    stall_evaluations: int = 4
    # What --precision auto picks where the hardware runs bf16 natively (python -m engine bench decides): bf16
    # halves VGG-Face's evaluations. dlib-resnet stays fp32: bf16 would be faster here too (bench: warm edit 0.97 s
    # against 1.38 s, a new process + 1.82 s against + 1.87 s) but bench/quality.py read identity 0.003-0.010
    # lower in every region (mouth 0.825 both, smile 0.785 against 0.795, eyes 0.819 / 0.822, eyebrows 0.814 /
    # 0.819), and fp32 already edits within its 1.5 s.
    precision: str = "fp32"


# dlib-resnet: tuned with bench/quality.py (dev pairs per region, judges in ../shared/eval). Its stages end on
# stalling too (stall 0.05): against every evaluation, mobileface mouth 0.823 / 0.825 (10/10 opened either way),
# smile 0.795 / 0.795 with face-api happy* 0.82 / 0.75 (the start's smile is worn less away), eyes 0.818 / 0.822,
# eyebrows 0.818 / 0.819; bench/bank_quality.py the same counts but identity kept in 12/15 smiles (13) and 14/24
# removals (13); and fewer evaluations.
DLIB_RESNET = Recipe(
    weights={"identity": 10.0, "attribute": 1.0, "tv": 0.2, "colour": 60.0, "change": 20.0, "gram": 0.0},
    identity_layers={"descriptor": 1.0},
    attribute_layers={"pool1": 1.0, "b35_3": 1.0, "b17_3": 0.5},
    stall=0.05,
)

# VGG-Face: its finer maps get their own layers; weights start from dlib's (not tuned on real weights yet:
# they cannot be downloaded here). Its loss flattens long before the last evaluation (the bundled example: 0.7654
# from evaluation 12 of 20 in the first stage, L-BFGS re-evaluating the same point), so stages end on stalling:
# 25-30 evaluations instead of 39 there.
VGGFACE = replace(DLIB_RESNET, identity_layers={"fc7": 1.0},
                  attribute_layers={"relu2_2": 0.5, "relu3_3": 1.0, "relu4_3": 1.0}, precision="bf16")

RECIPES: dict[str, Recipe] = {"dlib-resnet": DLIB_RESNET, "vggface": VGGFACE}


def recipe_for(backbone: str) -> Recipe:
    if backbone not in RECIPES:
        raise FATError(f"no recipe (tuned loss weights) for backbone {backbone!r}; known: "
                       f"{', '.join(RECIPES)}. Add one to engine/objective/recipes.py.", EXIT_BACKBONE)
    return RECIPES[backbone]


def fit_to_backbone(recipe: Recipe, spec: dict) -> Recipe:
    """The recipe's layers checked against the backbone's taps; identity layers the export left out (e.g. fc7
    of a --no-fc export) fall back to its descriptor tap."""
    taps = spec["taps"]
    identity = {(k if k in taps else spec.get("descriptor_tap", k)): v for k, v in recipe.identity_layers.items()}
    missing = [k for k in (*identity, *recipe.attribute_layers) if k not in taps]
    if missing:
        raise FATError(f"backbone {spec['backbone']} has no tap {', '.join(missing)} that its recipe uses; "
                       "re-export it (python -m export) or change the recipe.", EXIT_BACKBONE)
    return replace(recipe, identity_layers=identity)


def scalar_names() -> list[str]:
    """Names `--set` takes besides `TABLE.LAYER` (the same for every recipe)."""
    return [*DLIB_RESNET.weights, *(f.name for f in fields(Recipe)
                                    if f.name not in ("weights", "precision", *LAYER_TABLES))]


def check_overrides(overrides: dict[str, float]) -> None:
    """Names and numbers, before any model loads (layer names are checked against the recipe later)."""
    known = scalar_names()
    for name, value in overrides.items():
        table, dot, key = name.partition(".")
        if dot and table not in LAYER_TABLES or not dot and name not in known or dot and not key:
            raise FATError(f"{SET} {name}: unknown name; known: {', '.join(known)}, or "
                           f"identity_layers.LAYER / attribute_layers.LAYER.", EXIT_USAGE)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_NUMBER:
            raise FATError(f"{SET} {name}={value}: must be a number between 0 and {MAX_NUMBER:g}.", EXIT_USAGE)
        if name in WHOLE_NUMBERS and (value < 1 or value != int(value)):
            raise FATError(f"{SET} {name}={value}: must be a whole number >= 1.", EXIT_USAGE)
        if name in ("luma_grid", "chroma_grid") and value > 1:
            raise FATError(f"{SET} {name}={value}: a grid is a fraction of the network input (0..1).", EXIT_USAGE)
        if name == "luma_grid" and value == 0:
            raise FATError(f"{SET} luma_grid=0: the brightness grid must be > 0.", EXIT_USAGE)
        if name in ("band_fine", "band_coarse") and not 0 < value <= 0.5:
            raise FATError(f"{SET} {name}={value}: a blur scale is a fraction of the crop width (above 0, at most "
                           "0.5).", EXIT_USAGE)


def with_overrides(recipe: Recipe, overrides: dict[str, float]) -> Recipe:
    """The recipe with `--set` values applied (validated)."""
    check_overrides(overrides)
    weights = dict(recipe.weights)
    tables = {t: dict(getattr(recipe, t)) for t in LAYER_TABLES}
    scalars: dict[str, float] = {}
    for name, value in overrides.items():
        table, dot, key = name.partition(".")
        if dot:
            if key not in tables[table]:
                raise FATError(f"{SET} {name}: this backbone's recipe has no layer {key!r} in {table}; it has "
                               f"{', '.join(tables[table])}.", EXIT_USAGE)
            tables[table][key] = float(value)
        elif name in weights:
            weights[name] = float(value)
        else:
            scalars[name] = int(value) if name in WHOLE_NUMBERS else float(value)
    return replace(recipe, weights=weights, **tables, **scalars)


def as_dict(recipe: Recipe) -> dict:
    """For the sidecar: every number the edit used."""
    return {f.name: getattr(recipe, f.name) for f in fields(Recipe)}
