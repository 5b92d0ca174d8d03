"""The one options schema of an edit: names, defaults, ranges, choices and help.

Standard library only: the CLI parses and checks options before torch loads
(`--help` and option errors answer at once), the GIMP plug-in imports this file
from the project to build its dialog from `schema()` (GIMP's Python has no torch,
but needs nothing more here), and the bridge, the API and the sidecar all go
through `EditOptions`. A new option is one
field here; the CLI flag, the bridge key, the GIMP argument and the sidecar entry
follow from it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.bank.attributes import ATTRIBUTES
from engine.errors import EXIT_USAGE, FATError, arg_ref, option_ref
from engine.face.regions import REGIONS, WARPS
from engine.objective.recipes import check_overrides

BACKBONES = ("vggface", "dlib-resnet")  # preference order when none is named
INITS = ("composite", "seamless", "feathered", "reference", "noise")
GUIDE_REGION = "mouth"  # region auto with a guide photo (with an attribute: the attribute's own)
MAX_SEED = 2**31 - 1  # GIMP's int arguments are 32-bit


def resolved_region(region: str, attribute: str | None) -> str:
    """Region auto: the attribute's own region for an attribute edit, the mouth for a guide photo (one rule for
    the CLI, the API, GIMP and batch recipes; the GIMP dialog always sends a region, so a fixed default there
    overrode the attribute's own)."""
    if region != "auto":
        return region
    return ATTRIBUTES[attribute].region if isinstance(attribute, str) and attribute in ATTRIBUTES else GUIDE_REGION


def option(default: Any, help: str, *, label: str = "", choices: tuple[str, ...] = (), low: float | None = None,
           high: float | None = None, gimp: bool = True, advanced: bool = False, metavar: str | None = None,
           nargs: int | None = None, flag: str | None = None, labels: dict[str, str] | None = None,
           gimp_help: str | None = None) -> Any:
    """A dataclass field carrying its own CLI/GIMP metadata (the single source of truth). `gimp_help`: the
    dialog's tooltip where `help` speaks of flags or the command line."""
    meta = {"help": help, "gimp_help": gimp_help or help, "label": label, "choices": choices, "low": low,
            "high": high, "gimp": gimp,
            "advanced": advanced, "metavar": metavar, "nargs": nargs, "flag": flag,
            "labels": labels or {c: c.replace("_", " ").capitalize() for c in choices}}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class EditOptions:
    """Everything that decides an edit's result besides the images themselves."""

    # auto: the attribute's own region for an attribute edit (smiling: smile), the mouth for a guide photo. The GIMP
    # dialog always sends a region: a fixed default overrode the attribute's own there (the CLI took it)
    region: str = option("auto", "face region to change (auto: the mouth, or with --attribute the attribute's own; "
                                 "'selection': the --mask image / GIMP selection)",
                         gimp_help="face region to change (Automatic: the mouth, or with an attribute the attribute's "
                                   "own; 'Selection': exactly the selected area)",
                         label="_Region", choices=("auto", *REGIONS),
                         labels={"auto": "Automatic", **{k: r.label for k, r in REGIONS.items()}})
    strength: float = option(1.0, "0 = unchanged, 0.5 = halfway, 1 = the guide's, above 1 goes further (a mouth "
                                  "opens wider, a smile lifts more); with --attribute -2..2 (below 0 removes the "
                                  "attribute; the CLI also takes a list, 0.5,1,1.5: one output each)",
                             label="_Strength", low=-2.0, high=2.0,
                             gimp_help="0 = unchanged, 0.5 = halfway, 1 = the guide's (with an attribute: the bank's "
                                       "examples'), above 1 goes further (a mouth opens wider, a smile lifts more); "
                                       "with an attribute instead of a guide -2..2 (below 0 removes it)")
    attribute: str | None = option(None, "instead of a guide photo: the attribute to add or remove, from the "
                                         "nearest example faces of an attribute bank (--bank)", label="_Attribute",
                                   choices=tuple(ATTRIBUTES), labels={k: a.label for k, a in ATTRIBUTES.items()},
                                   gimp=False)
    bank: str | None = option(None, "attribute bank file (python -m engine bank build); default: "
                                    "models/bank-BACKBONE.npz", metavar="BANK", gimp=False)
    k: int | None = option(None, "how many nearest example faces with and without the attribute set its "
                                 "direction (default 5, fewer where the bank has fewer; a given --k is required)",
                           label="_K nearest", low=1, high=100, advanced=True, gimp=False)
    iterations: int = option(40, "optimisation steps (0 = the composite start alone)", label="_Iterations",
                             low=0, high=5000, advanced=True)
    init: str = option("composite", "start image: the guide's region Poisson-blended at its edge (composite), "
                                    "seamlessClone, a feathered paste, the reference, or noise",
                       label="S_tart image", choices=INITS, advanced=True)
    optimizer: str = option("lbfgs", "optimiser", label="Optimi_zer", choices=("lbfgs", "adam"),
                            labels={"lbfgs": "L-BFGS", "adam": "Adam"}, advanced=True)
    seed: int = option(0, "random seed (results are reproducible)", label="See_d", low=0, high=MAX_SEED,
                       advanced=True)
    backbone: str | None = option(None, "vggface, dlib-resnet, or a spec .json (default: vggface if installed)",
                                  label="_Backbone", choices=BACKBONES, advanced=True,
                                  labels={"vggface": "VGG-Face", "dlib-resnet": "dlib-resnet"})
    precision: str = option("auto", "arithmetic of the optimisation's network passes: bf16 where the CPU/GPU runs "
                                    "it natively and the backbone's recipe prefers it (auto), or forced",
                            label="Precision (e_xact or fast)", choices=("auto", "fp32", "bf16"),
                            labels={"auto": "Automatic", "fp32": "fp32 (exact)", "bf16": "bf16 (fast)"},
                            advanced=True)
    device: str = option("auto", "where to compute", label="De_vice (CPU or GPU)", choices=("auto", "cpu", "cuda"),
                         labels={"auto": "Automatic", "cpu": "CPU", "cuda": "CUDA GPU"}, advanced=True)
    face: int | None = option(None, "which face in the reference when there are several (0 = largest)",
                              label="_Face", low=0, high=1000)
    guide_face: int | None = option(None, "which face in the guide (0 = largest)", label="Guide fa_ce", low=0,
                                    high=1000, gimp=False)
    warp: str = option("auto", "fit the guide to the reference before blending. auto: mouths, smiles, eyes and "
                               "eyebrows take the guide's shape (the reference's own features bent to it), other "
                               "regions are not bent; none: no bending at all; move (the region's anchors onto the "
                               "reference's), piecewise affine or thin-plate spline: the method of the bend for "
                               "those, and for other regions the guide bent onto the "
                               "reference's landmarks, its region's shape and opening kept", label="_Warp",
                       choices=WARPS,
                       labels={"auto": "Automatic (by region)", "none": "None", "similarity": "Move (corners)",
                               "affine": "Piecewise affine", "tps": "Thin-plate spline"}, advanced=True)
    detector: str = option("hog", "face detector: hog (fast, frontal) or cnn (turned and small faces)",
                           label="Detec_tor", choices=("hog", "cnn"), labels={"hog": "HOG", "cnn": "CNN"},
                           advanced=True)
    box: tuple[float, float, float, float] | None = option(
        None, "edit the face inside this box (pixels)", metavar="L T R B", nargs=4, gimp=False)
    overrides: dict[str, float] = option({}, "override a tuned number of the backbone's recipe, e.g. "
                                             "identity=5 or attribute_layers.b35_3=0.5 (engine/objective/recipes.py)",
                                         metavar="NAME=VALUE", gimp=False, flag="--set")

    @property
    def edit_region(self) -> str:
        """The region the edit changes (region auto resolved: resolved_region)."""
        return resolved_region(self.region, self.attribute)

    @classmethod
    def from_mapping(cls, values: dict, where: str = "options") -> EditOptions:
        """From a bridge request, a recipe file or keyword arguments; unknown keys are errors."""
        if not isinstance(values, dict):
            raise FATError(f"{where}: expected an object of option names and values.", EXIT_USAGE)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FATError(f"{where}: unknown option(s) {', '.join(map(str, unknown))}; known: "
                           f"{', '.join(sorted(known))}.", EXIT_USAGE)
        return cls(**values).validate()

    def validate(self) -> EditOptions:
        """Types, ranges and choices of every option: cheap, before any model or image loads."""
        for f in fields(self):
            setattr(self, f.name, _checked(f, getattr(self, f.name)))
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise FATError(f"{option_ref('box', ' '.join(f'{v:g}' for v in self.box))}: needs left < right and top < "
                           "bottom.",
                           EXIT_USAGE)
        if self.attribute is None and self.strength < 0:
            raise FATError(f"{option_ref('strength')} {self.strength:g}: must be between 0 and 2 for a guide edit; "
                           f"negative strengths (removing an attribute) need {option_ref('attribute')}.", EXIT_USAGE)
        check_overrides(self.overrides)
        return self

    def with_mask(self, has_mask: bool) -> EditOptions:
        """A mask image is the region: region 'selection' needs one, and one given with region auto means
        'selection'; with a landmark region named by hand it is an error, not silently ignored."""
        if has_mask and self.region == "auto":
            self.region = "selection"
        if has_mask != REGIONS[self.edit_region].user_mask:
            raise FATError(f"region {self.region!r} needs a mask image ({arg_ref('mask')})." if not has_mask
                           else f"a mask image is the edit region itself; drop {option_ref('region', self.region)} (or "
                                f"use {option_ref('region', 'selection')}).", EXIT_USAGE)
        return self

    def to_dict(self) -> dict:
        """JSON-ready (the sidecar's settings)."""
        d = asdict(self)
        d["box"] = list(self.box) if self.box is not None else None
        return d


def _checked(f, value: Any) -> Any:
    meta, name = f.metadata, f.name
    flag = option_ref(name)  # --name on the command line, the dialog's label in GIMP
    optional = f.default is None
    if value is None:
        if optional:
            return None
        raise FATError(f"{flag}: a value is needed.", EXIT_USAGE)
    kind = option_kind(f)
    if kind is str:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise FATError(f"{flag}: {value!r} is not text.", EXIT_USAGE)
        if meta["choices"] and value not in meta["choices"] and not _free_choice(name, value):
            raise FATError(f"{flag} {value}: choose one of {', '.join(meta['choices'])}.", EXIT_USAGE)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise FATError(f"{flag} {value!r}: must be a whole number.", EXIT_USAGE)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FATError(f"{flag} {value!r}: must be a number.", EXIT_USAGE)
        value = float(value)
    elif kind is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != meta["nargs"]:
            raise FATError(f"{flag}: needs {meta['nargs']} numbers ({meta['metavar']}).", EXIT_USAGE)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise FATError(f"{flag} {value}: needs {meta['nargs']} finite numbers ({meta['metavar']}).", EXIT_USAGE)
        return tuple(float(v) for v in value)
    elif kind is dict:
        if not isinstance(value, dict):
            raise FATError(f"{flag}: expected NAME=VALUE pairs.", EXIT_USAGE)
        return dict(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise FATError(f"{flag} {value}: must be a finite number.", EXIT_USAGE)
    low, high = meta["low"], meta["high"]
    if (low is not None and value < low) or (high is not None and value > high):
        raise FATError(f"{flag} {value}: must be between {low:g} and {high:g}.", EXIT_USAGE)
    return value


def cli_flag(f) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _free_choice(name: str, value: str) -> bool:
    """A backbone may also be a spec file; a device may name one GPU (cuda:1)."""
    if name == "backbone":
        return value.endswith(".json")
    if name == "device":
        return value.startswith("cuda:") and value[5:].isdigit()
    return False


def option_kind(f) -> type:
    text = str(f.type)
    for name, kind in (("tuple", tuple), ("dict", dict), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return kind
    raise TypeError(f"option {f.name}: unsupported type {text}")


def schema() -> list[dict]:
    """The options as JSON-ready records, in order (CLI, GIMP dialog, docs)."""
    out = []
    for f in fields(EditOptions):
        default = f.default if f.default is not MISSING else f.default_factory()
        meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in f.metadata.items()}
        out.append({"name": f.name, "type": option_kind(f).__name__, "default": default,
                    "optional": f.default is None, **meta})
    return out
