"""The Python API: `edit(reference, guide=..., region=...) -> Result`.

Data flows one way: load -> detect/align -> optimise -> paste back -> save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.backbone import Backbone, load_backbone
from engine.composite import composite, feathered_paste, seamless_clone
from engine.errors import EXIT_USAGE, FATError
from engine.faces import descriptor_distance
from engine.fileio import atomic_write_json
from engine.geometry import AlignedFace, align_face, crop_mask
from engine.imageio import Photo, check_output_path, load_photo, save_photo
from engine.masks import inner_mouth_mask, user_mask
from engine.optimise import CancelToken, Problem, Progress, Weights, optimise, targets
from engine.pasteback import paste_back
from engine.runtime import resolve_device

INITS = ("composite", "seamless", "feathered", "reference", "noise")


@dataclass
class Settings:
    region: str = "mouth"
    strength: float = 1.0
    init: str = "composite"
    iterations: int = 60
    optimizer: str = "lbfgs"
    seed: int = 0
    backbone: str | None = None
    device: str | None = None
    face: int | None = None
    guide_face: int | None = None
    detector: str = "hog"
    weights: Weights = field(default_factory=Weights)

    def check(self) -> None:
        if not 0.0 <= self.strength <= 2.0:
            raise FATError(f"strength {self.strength} is outside [0, 2].", EXIT_USAGE)
        if self.init not in INITS:
            raise FATError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}.", EXIT_USAGE)
        if not 0 <= self.iterations <= 5000:
            raise FATError(f"iterations {self.iterations} must be between 0 and 5000.", EXIT_USAGE)


@dataclass
class Frames:
    """Both faces in one canonical frame at the reference's work resolution."""

    ref: AlignedFace
    guide: AlignedFace
    mask: np.ndarray  # crop-frame region mask
    user_mask: np.ndarray | None  # photo-frame mask given by the user (a hard limit), if any


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
    frames: Frames | None = None  # faces, transforms and masks, for debug pictures
    guide: Photo | None = None

    def rgb8(self) -> np.ndarray:
        return np.clip(np.rint(self.image), 0, 255).astype(np.uint8)

    def save(self, out: Path, sidecar: bool = True) -> None:
        check_output_path(out, [self.photo.path])
        save_photo(self.photo, self.image, Path(out))
        if sidecar:
            atomic_write_json(Path(out).with_suffix(".json"), self.summary())

    def summary(self) -> dict:
        return {"settings": self.settings, "timings_s": self.timings,
                "dlib_descriptor_distance_reference_to_result": self.descriptor_distance,
                "final_losses": self.history[-1] if self.history else {}}


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()


def _to_image(t: torch.Tensor) -> np.ndarray:
    return t[0].detach().cpu().numpy().transpose(1, 2, 0)


def initial_image(kind: str, ref: np.ndarray, guide: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    if kind == "composite":
        return composite(guide, ref, mask)
    if kind == "seamless":
        return seamless_clone(guide, ref, mask)
    if kind == "feathered":
        return feathered_paste(guide, ref, mask)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0, 255, ref.shape).astype(np.float32)
        return ref * (1 - mask[..., None]) + noise * mask[..., None]
    return ref.copy()


def align_pair(ref_photo: Photo, guide_photo: Photo, template: dict, settings: Settings,
               box: tuple[float, float, float, float] | None, mask) -> Frames:
    ref = align_face(ref_photo, template, settings.detector, settings.face, box, "reference", factor=None)
    guide = align_face(guide_photo, template, settings.detector, settings.guide_face, None, "guide",
                       factor=ref.factor)
    full = None if mask is None else user_mask(mask, ref_photo.rgb.shape[:2])
    return Frames(ref, guide, crop_mask(ref, settings.region, full), full)


def start_image(frames: Frames, settings: Settings) -> np.ndarray:
    """The optimisation's start. Strength acts here as well as on the feature target: 0.5 pastes half
    of the guide's region, 0 leaves the reference as it is; above 1 only the target moves further."""
    ref = frames.ref.crop
    init = initial_image(settings.init, ref, frames.guide.crop, frames.mask, settings.seed)
    return ref + min(1.0, settings.strength) * (init - ref)


def build_problem(bb: Backbone, frames: Frames, init_crop: np.ndarray, settings: Settings,
                  dev: torch.device) -> Problem:
    ref_t, guide_t = _to_tensor(frames.ref.crop).to(dev), _to_tensor(frames.guide.crop).to(dev)
    id_layers = dict(bb.spec["identity_layers"])
    attr_layers = dict(bb.spec["attribute_layers"])
    ref_f, attr_f = targets(bb, ref_t, guide_t, id_layers, attr_layers, settings.strength)
    keep = None
    if settings.region == "mouth" and frames.user_mask is None:  # the guide's opening itself should survive
        keep = inner_mouth_mask(frames.guide.landmarks, frames.ref.size)
        keep = torch.from_numpy(keep * frames.mask).to(dev)
    return Problem(bb, _to_tensor(init_crop).to(dev), torch.from_numpy(frames.mask).to(dev), ref_f, attr_f,
                   id_layers, attr_layers, settings.weights, keep)


def edit(reference, guide=None, region: str = "mouth", strength: float = 1.0, *, init: str = "composite",
         iterations: int = 60, optimizer: str = "lbfgs", seed: int = 0, backbone: str | Backbone | None = None,
         device: str | None = None, face: int | None = None, guide_face: int | None = None,
         box: tuple[float, float, float, float] | None = None, mask=None, detector: str = "hog",
         weights: Weights | None = None, progress: Callable[[Progress], None] | None = None,
         cancel: CancelToken | None = None, log: Callable[[str], None] | None = None) -> Result:
    """Give the reference face the guide's `region` (mouth, eyes, ...); see README for the options.

    reference / guide: file paths, PIL images or H x W x 3 arrays. `mask` (same size as the
    reference, white = edit) overrides the landmark region.
    """
    settings = Settings(region, strength, init, iterations, optimizer, seed,
                        backbone if isinstance(backbone, str) or backbone is None else backbone.name,
                        device, face, guide_face, detector, weights or Weights())
    settings.check()
    if guide is None:
        raise FATError("a guide image is needed (--guide): the face whose attribute to transfer.", EXIT_USAGE)
    log = log or (lambda _m: None)
    torch.manual_seed(seed)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    dev = resolve_device(device)
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, dev)
    log(f"backbone: {bb.name} ({bb.onnx_path})")
    ref_photo, guide_photo = load_photo(reference), load_photo(guide)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    frames = align_pair(ref_photo, guide_photo, bb.spec["crop_template"], settings, box, mask)
    timings["align"] = time.perf_counter() - t

    t = time.perf_counter()
    init_crop = start_image(frames, settings)
    problem = build_problem(bb, frames, init_crop, settings, dev)
    if iterations > 0:
        result_t, history = optimise(problem, iterations, optimizer, seed, progress, cancel)
    else:
        result_t, history = problem.init, []
    if progress is not None:
        progress(Progress(iterations, iterations, history[-1] if history else {}, time.perf_counter() - t))
    result_crop = _to_image(result_t)
    timings["optimise"] = time.perf_counter() - t

    t = time.perf_counter()
    image = paste_back(ref_photo.rgb, frames.ref.transform, result_crop - frames.ref.crop, frames.mask)
    if frames.user_mask is not None:  # a user's mask is a hard promise: nothing changes outside it
        a = frames.user_mask[..., None]
        image = np.where(a > 0, ref_photo.rgb + a * (image - ref_photo.rgb), ref_photo.rgb)
    timings["paste_back"] = time.perf_counter() - t
    t = time.perf_counter()
    distance = descriptor_distance(ref_photo.rgb8(), np.clip(np.rint(image), 0, 255).astype(np.uint8),
                                        frames.ref.face.landmarks)
    timings["descriptor"] = time.perf_counter() - t
    summary = {k: v for k, v in settings.__dict__.items() if k != "weights"}
    summary.update(weights=settings.weights.__dict__, backbone=bb.name, work_factor=frames.ref.factor,
                   crop_size=list(frames.ref.size),
                   reference=str(ref_photo.path) if ref_photo.path else None,
                   guide=str(guide_photo.path) if guide_photo.path else None)
    crops = {"reference": frames.ref.crop, "guide": frames.guide.crop, "init": init_crop, "result": result_crop}
    return Result(image, ref_photo, crops, frames.mask, summary, timings, distance, history, frames, guide_photo)
