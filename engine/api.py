"""The Python API: `edit(reference, guide=..., region=...) -> Result`.

Data flows one way: check options -> load -> detect/align (the face frame) ->
start image -> optimise -> paste back -> save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.errors import EXIT_USAGE, FATError, arg_ref, option_ref
from engine.face.frame import FaceFrame, frame_faces
from engine.io.files import atomic_write, atomic_write_json
from engine.io.images import Photo, kept_monochrome, load_photo, save_photo
from engine.io.paths import check_output_path
from engine.models.backbone import Backbone, load_backbone, read_spec, resolve_path
from engine.models.descriptor import descriptor_distance
from engine.models.runtime import resolve_device, resolve_precision
from engine.objective.composite import frame_start
from engine.objective.optimise import CancelToken, Problem, Progress, solve, targets
from engine.objective.recipes import Recipe, as_dict, fit_to_backbone, recipe_for, with_overrides
from engine.options import EditOptions


@dataclass
class Result:
    image: np.ndarray  # float32 H x W x 3, 0..255, full resolution
    photo: Photo  # the reference as loaded (depth, alpha, ICC for saving)
    crops: dict[str, np.ndarray]  # reference, guide, init, result (work resolution)
    mask: np.ndarray  # work-resolution region mask
    settings: dict
    timings: dict[str, float]
    descriptor_distance: float
    history: list[dict]
    frame: FaceFrame | None = None  # faces, transforms and masks, for debug pictures
    guide: Photo | None = None
    unchanged: bool = False  # strength 0: the reference itself (saved byte-identical when the type matches)
    notes: tuple[str, ...] = ()  # what the user should know about this result (an attribute with nothing to remove)
    advice: tuple[str, ...] = ()  # about the setup, the same for every such edit (a bank with few examples): say once

    def rgb8(self) -> np.ndarray:
        return np.clip(np.rint(self.image), 0, 255).astype(np.uint8)

    def save(self, out: Path, sidecar: bool = True) -> None:
        check_output_path(out, [self.photo.path])
        src = self.photo.path
        if self.unchanged and src is not None and Path(src).suffix.lower() == Path(out).suffix.lower():
            data = Path(src).read_bytes()
            atomic_write(Path(out), lambda p: p.write_bytes(data))
        else:
            save_photo(self.photo, self.image, Path(out))
        if sidecar:
            atomic_write_json(Path(out).with_suffix(".json"), self.summary())

    def summary(self) -> dict:
        return {"settings": self.settings, "timings_s": self.timings,
                "dlib_descriptor_distance_reference_to_result": self.descriptor_distance,
                "final_losses": self.history[-1] if self.history else {}, **self.remarks()}

    def remarks(self) -> dict[str, list[str]]:
        """What the user is told, by kind: the sidecar, the CLI's JSON progress and GIMP's bridge all send this."""
        return {"notes": list(self.notes), "advice": list(self.advice)}


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()


def _to_image(t: torch.Tensor) -> np.ndarray:
    return t[0].detach().cpu().numpy().transpose(1, 2, 0)


def edit_options(options: EditOptions | None, values: dict, has_mask: bool) -> EditOptions:
    """One EditOptions from either an object or keyword values (not both), validated."""
    if options is not None and values:
        raise FATError(f"give either options=EditOptions(...) or keyword options, not both ({', '.join(values)}).",
                       EXIT_USAGE)
    options = EditOptions.from_mapping(values, "edit()") if options is None else options.validate()
    return options.with_mask(has_mask)


def loaded_or_named(backbone: Backbone | str | Path | None, options: EditOptions | None,
                    values: dict) -> tuple[Backbone | None, EditOptions | None]:
    """`backbone=` may be a loaded Backbone or, like the option, a name or spec path: a name becomes the
    `backbone` option (of `options`, copied, or of the keyword options `values`)."""
    if not isinstance(backbone, (str, Path)):
        return backbone, options
    if options is None:
        values["backbone"] = str(backbone)
        return None, None
    return None, replace(options, backbone=str(backbone))


def backbone_recipe(options: EditOptions, backbone: Backbone | None) -> tuple[dict, Recipe]:
    """The backbone's spec and its recipe with `--set` applied: checked before any model loads."""
    if backbone is not None:
        spec = backbone.spec
    else:
        spec, _ = read_spec(resolve_path(options.backbone), check_hash=False)
    recipe = fit_to_backbone(recipe_for(spec["backbone"]), spec)
    return spec, with_overrides(recipe, options.overrides)


def ready_backbone(options: EditOptions, backbone: Backbone | None, recipe: Recipe,
                   log: Callable[[str], None]) -> tuple[Backbone, torch.device, str]:
    """The device, the precision (options + the recipe's preference + the hardware) and the loaded backbone."""
    dev = resolve_device(options.device)
    precision = resolve_precision(options.precision, dev, recipe.precision)
    bb = backbone if backbone is not None else load_backbone(options.backbone, dev)
    bb.precision = precision
    if options.iterations > 0:  # while the photos are read and aligned (a composite-only edit runs no pass back)
        bb.start_packing([*recipe.identity_layers, *recipe.attribute_layers])
    log(f"backbone: {bb.name} ({bb.onnx_path}), {precision}")
    return bb, dev, precision


def start_crop(frame: FaceFrame, options: EditOptions, recipe: Recipe) -> np.ndarray:
    """The optimisation's start. Strength acts here as well as on the feature target: 0.5 pastes half
    of the guide's region, 0 leaves the reference as it is; above 1 a region whose shape is the attribute is bent
    further than the guide's shape (frame_faces' reach), and the target moves further."""
    return frame_start(frame, options.strength, options.init, options.seed, recipe)


def build_problem(bb: Backbone, frame: FaceFrame, init_crop: np.ndarray, options: EditOptions, recipe: Recipe,
                  dev: torch.device) -> Problem:
    ref_t, guide_t = _to_tensor(frame.ref.crop).to(dev), _to_tensor(frame.guide.crop).to(dev)
    ref_f, attr_f = targets(bb, ref_t, guide_t, recipe, options.strength)
    keep = None if frame.keep is None else torch.from_numpy(frame.keep).to(dev)
    return Problem(bb, _to_tensor(init_crop).to(dev), torch.from_numpy(frame.mask).to(dev), ref_f, attr_f,
                   recipe, keep)


def edit(reference, guide=None, options: EditOptions | None = None, *, mask=None,
         backbone: Backbone | str | Path | None = None, progress: Callable[[Progress], None] | None = None,
         cancel: CancelToken | None = None, log: Callable[[str], None] | None = None,
         stage: Callable[[str], None] | None = None, **values) -> Result:
    """Give the reference face the guide's `region` (mouth, eyes, ...); options as in engine/options.py,
    either as `options=EditOptions(...)` or as keywords (`region="eyes", strength=0.5`).

    reference / guide: file paths, PIL images or H x W x 3 arrays. `mask` (same size as the
    reference, white = edit) is the region ('selection'). `backbone`: a loaded Backbone, a name or a spec path.
    `stage` hears what is starting ("Loading the model", "Finding faces", "Optimising", "Pasting back"),
    so that a front end can say more than a step count.
    """
    backbone, options = loaded_or_named(backbone, options, values)
    bank = values.pop("bank") if not isinstance(values.get("bank", ""), (str, Path, type(None))) else None
    options = edit_options(options, values, mask is not None)
    if backbone is not None:
        options.backbone = backbone.name
    if options.attribute is not None:
        return edit_strengths(reference, [options.strength], options, mask=mask, backbone=backbone, bank=bank,
                              guide=guide, progress=progress, cancel=cancel, log=log, stage=stage)[0]
    if guide is None:
        raise FATError(f"a guide image is needed ({arg_ref('guide')}): the face whose attribute to transfer, or an "
                       f"attribute ({option_ref('attribute')}) to take from an attribute bank.", EXIT_USAGE)
    spec, recipe = backbone_recipe(options, backbone)
    log = log or (lambda _m: None)
    stage = stage or (lambda _m: None)
    torch.manual_seed(options.seed)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if backbone is None:
        stage("Loading the model")
    bb, dev, precision = ready_backbone(options, backbone, recipe, log)
    stage("Finding faces")
    ref_photo, guide_photo = load_photo(reference), load_photo(guide)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    frame = frame_faces(ref_photo, guide_photo, spec["crop_template"], options.edit_region, options.detector,
                        options.face, options.guide_face, options.box, mask, options.warp, options.strength)
    timings["align"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("Optimising")
    init_crop = start_crop(frame, options, recipe)
    problem = build_problem(bb, frame, init_crop, options, recipe, dev)
    result_t, history = solve(problem, options.iterations, options.optimizer, options.seed, progress, cancel)
    result_crop = _to_image(result_t)
    timings["optimise"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("Pasting back")
    image = kept_monochrome(ref_photo, frame.paste(ref_photo.rgb, result_crop, frame.share(options.strength)))
    timings["paste_back"] = time.perf_counter() - t
    t = time.perf_counter()
    distance = descriptor_distance(ref_photo.rgb, image, frame.ref.face.landmarks)
    timings["descriptor"] = time.perf_counter() - t
    summary = {**options.to_dict(), "region_used": options.edit_region, "backbone": bb.name,
               "precision_used": precision, "recipe": as_dict(recipe),
               "work_factor": frame.ref.factor,
               "crop_size": list(frame.ref.size),
               "reference": str(ref_photo.path) if ref_photo.path else None,
               "guide": str(guide_photo.path) if guide_photo.path else None,
               "mask": str(mask) if isinstance(mask, (str, Path)) else None}
    crops = {"reference": frame.ref.crop, "guide": frame.guide.crop, "init": init_crop, "result": result_crop}
    return Result(image, ref_photo, crops, frame.mask, summary, timings, distance, history, frame, guide_photo)


def edit_strengths(reference, strengths: list[float], options: EditOptions | None = None, *, mask=None,
                   backbone: Backbone | str | Path | None = None, bank=None, guide=None,
                   progress: Callable[[Progress], None] | None = None, cancel: CancelToken | None = None,
                   log: Callable[[str], None] | None = None, stage: Callable[[str], None] | None = None,
                   **values) -> list[Result]:
    """Attribute edits (mode B: an attribute bank instead of a guide photo), one Result per strength, each
    warm-started from the previous one of the same sign (engine/bank/edit.py). `bank`: a
    path, a loaded engine.bank.store.Bank, or None (options.bank, else the default bank)."""
    from engine.bank.edit import AttributeEditor, bank_of, check_attribute_request

    backbone, options = loaded_or_named(backbone, options, values)
    options = edit_options(options, values, mask is not None)
    if options.attribute is None:
        raise FATError(f"an attribute edit needs {option_ref('attribute')} (smiling, mouth_open, ...).", EXIT_USAGE)
    check_attribute_request(options, guide)
    if not len(strengths):  # an empty list returned nothing and said nothing (a user trial)
        raise FATError("edit_strengths needs at least one strength, e.g. [0.5, 1.0].", EXIT_USAGE)
    for s in strengths:
        EditOptions.from_mapping({**options.to_dict(), "strength": s, "box": options.box}, "--strength")
    if backbone is not None:
        options.backbone = backbone.name
    spec, recipe = backbone_recipe(options, backbone)
    bank = bank_of(bank if bank is not None else options.bank, spec["backbone"])
    log = log or (lambda _m: None)
    stage = stage or (lambda _m: None)
    torch.manual_seed(options.seed)
    t = time.perf_counter()
    if backbone is None:
        stage("Loading the model")
    bb, dev, precision = ready_backbone(options, backbone, recipe, log)
    stage("Finding faces")
    editor = AttributeEditor(bb, spec, recipe, options, bank, reference, mask, log)
    setup = time.perf_counter() - t
    results, warm = [], None
    for strength in strengths:
        t = time.perf_counter()
        opts = EditOptions.from_mapping({**options.to_dict(), "strength": strength, "box": options.box})
        frame, example = editor.frame(strength)
        ref = editor.ref
        if strength == 0:
            init = crop = ref.crop
            history: list = []
            image, distance, unchanged = editor.photo.rgb, 0.0, True
        else:
            w = warm if warm is not None and (warm[0] > 0) == (strength > 0) else None
            stage("Optimising")
            init, crop, history = editor.run(strength, w, progress, cancel)
            warm = (strength, crop)
            stage("Pasting back")
            image = kept_monochrome(editor.photo, frame.paste(editor.photo.rgb, crop, frame.share(strength)))
            distance = descriptor_distance(editor.photo.rgb, image, ref.face.landmarks)
            unchanged = False
        timings = {"setup": setup, "edit": time.perf_counter() - t}
        summary = {**opts.to_dict(), "backbone": bb.name, "precision_used": precision, "recipe": as_dict(recipe),
                   "work_factor": ref.factor, "crop_size": list(ref.size),
                   "reference": str(editor.photo.path) if editor.photo.path else None, "guide": None,
                   "warm_start_from": w[0] if strength != 0 and w is not None else None, **editor.record(strength)}
        crops = {"reference": ref.crop, "guide": frame.guide.crop, "init": init, "result": crop}
        results.append(Result(image, editor.photo, crops, frame.mask, summary, timings, distance, history, frame,
                              example, unchanged, editor.notes(strength), editor.advice(strength)))
    return results
