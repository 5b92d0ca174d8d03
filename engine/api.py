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

from engine.align import scale_of, transform_points, warp_crop
from engine.backbone import Backbone, load_backbone
from engine.composite import composite, feathered_paste, seamless_clone
from engine.errors import EXIT_USAGE, FATError
from engine.faces import find_face
from engine.fileio import atomic_write_json
from engine.imageio import Photo, check_output_path, load_photo, save_photo
from engine.masks import inner_mouth_mask, region_mask, user_mask
from engine.optimise import CancelToken, Problem, Progress, Weights, optimise, targets
from engine.pasteback import paste_back
from engine.runtime import resolve_device

INITS = ("composite", "seamless", "feathered", "reference", "noise")
MAX_WORK_FACTOR = 4


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
class Result:
    image: np.ndarray  # float32 H x W x 3, 0..255, full resolution
    photo: Photo  # the reference as loaded (depth, alpha, ICC for saving)
    crops: dict[str, np.ndarray]  # reference, guide, init, result (work resolution)
    mask: np.ndarray  # work-resolution region mask
    settings: dict
    timings: dict[str, float]
    descriptor_distance: float
    history: list[dict]

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


def dlib_descriptor_distance(a: np.ndarray, b: np.ndarray, landmarks: np.ndarray) -> float:
    """dlib's own descriptor distance between two photos at the same face position."""
    import dlib

    from engine import dlib_models

    net = dlib.face_recognition_model_v1(str(dlib_models.recognition_resnet()))
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                       [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
    da = np.array(net.compute_face_descriptor(np.ascontiguousarray(a), shape))
    db = np.array(net.compute_face_descriptor(np.ascontiguousarray(b), shape))
    return float(np.linalg.norm(da - db))


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
    template = bb.spec["crop_template"]
    ref_face, _ = find_face(ref_photo.rgb8(), detector, face, box, "reference")
    guide_face_obj, _ = find_face(guide_photo.rgb8(), detector, guide_face, None, "guide")
    from engine.align import template_transform

    m_net = template_transform(ref_face.landmarks, template)
    # Work at the face's own resolution (up to 4x the network's input), so paste-back is not a blurry upscale.
    k = int(np.clip(round(1.0 / max(scale_of(m_net), 1e-6)), 1, MAX_WORK_FACTOR))
    h, w = (int(v) * k for v in template["size"])
    m_ref = m_net * k
    m_guide = template_transform(guide_face_obj.landmarks, template) * k
    ref_crop = warp_crop(ref_photo.rgb, m_ref, (h, w))
    guide_crop = warp_crop(guide_photo.rgb, m_guide, (h, w))
    full = None
    if mask is not None:
        import cv2

        full = user_mask(mask, ref_photo.rgb.shape[:2])
        crop_m = np.clip(cv2.warpAffine(full.astype(np.float32), m_ref, (w, h), flags=cv2.INTER_LINEAR), 0, 1)
    else:
        crop_m = region_mask(transform_points(m_ref, ref_face.landmarks), region, (h, w))
    timings["align"] = time.perf_counter() - t

    t = time.perf_counter()
    init_crop = initial_image(init, ref_crop, guide_crop, crop_m, seed)
    # Strength acts on the start as well as on the feature target: 0.5 pastes half of the guide's region,
    # 0 leaves the reference as it is; above 1 only the target moves further (extrapolation).
    init_crop = ref_crop + min(1.0, strength) * (init_crop - ref_crop)
    ref_t, guide_t, init_t = _to_tensor(ref_crop).to(dev), _to_tensor(guide_crop).to(dev), _to_tensor(init_crop).to(dev)
    id_layers = dict(bb.spec["identity_layers"])
    attr_layers = dict(bb.spec["attribute_layers"])
    ref_f, attr_f = targets(bb, ref_t, guide_t, id_layers, attr_layers, strength)
    keep = None
    if region == "mouth" and mask is None:  # the opening itself (the guide's inner lips) should survive
        keep = inner_mouth_mask(transform_points(m_guide, guide_face_obj.landmarks), (h, w))
        keep = torch.from_numpy(keep * crop_m).to(dev)
    problem = Problem(bb, init_t, torch.from_numpy(crop_m).to(dev), ref_f, attr_f, id_layers, attr_layers,
                      settings.weights, keep)
    if iterations > 0:
        result_t, history = optimise(problem, iterations, optimizer, seed, progress, cancel)
    else:
        result_t, history = init_t, []
    if progress is not None:
        progress(Progress(iterations, iterations, history[-1] if history else {}, time.perf_counter() - t))
    result_crop = _to_image(result_t)
    timings["optimise"] = time.perf_counter() - t

    t = time.perf_counter()
    image = paste_back(ref_photo.rgb, m_ref, result_crop - ref_crop, crop_m)
    if full is not None:  # a user's mask is a hard promise: nothing changes outside it
        a = full[..., None]
        image = np.where(a > 0, ref_photo.rgb + a * (image - ref_photo.rgb), ref_photo.rgb)
    timings["paste_back"] = time.perf_counter() - t
    t = time.perf_counter()
    distance = dlib_descriptor_distance(ref_photo.rgb8(), np.clip(np.rint(image), 0, 255).astype(np.uint8),
                                        ref_face.landmarks)
    timings["descriptor"] = time.perf_counter() - t
    summary = {k: v for k, v in settings.__dict__.items() if k != "weights"}
    summary.update(weights=settings.weights.__dict__, backbone=bb.name, work_factor=k, crop_size=[h, w],
                   reference=str(ref_photo.path) if ref_photo.path else None,
                   guide=str(guide_photo.path) if guide_photo.path else None)
    return Result(image, ref_photo, {"reference": ref_crop, "guide": guide_crop, "init": init_crop,
                                     "result": result_crop}, crop_m, summary, timings, distance, history)
