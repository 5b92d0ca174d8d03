"""One batch task in whatever process runs it (this one, or a Dask worker): edit, save, report record.

The backbones load once per process (the warm service's own ModelCache) and so do the banks (the cache
below); the face detections and target features of a shared guide are computed once (engine/face/detect.py
and Backbone.features_remembered remember them by content), so a worker pays the start-up once and then
only each photo's own work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.bank.attributes import ATTRIBUTES
from engine.batch.tasks import Task, sidecar_of
from engine.errors import EXIT_NO_FACE, FATError, describe_failure
from engine.frontends.service import ModelCache
from engine.io.files import atomic_write_json
from engine.io.paths import check_output_path
from engine.options import resolved_region

_MODELS = ModelCache()
_BANKS: dict[tuple, object] = {}


def bank_for(path: str | None, backbone: str):
    key = (path, backbone)
    if key not in _BANKS:
        from engine.bank.edit import bank_of

        _BANKS[key] = bank_of(path, backbone)
    return _BANKS[key]


def score_name(options: dict) -> str | None:
    """The landmark score that tracks the edit: the attribute's, else that of the attribute owning the region."""
    if options.get("attribute"):
        return ATTRIBUTES[options["attribute"]].score
    region = resolved_region(options.get("region", "auto"), None)
    return next((a.score for a in ATTRIBUTES.values() if a.region == region), None)


def face_boxes(photo, detector: str) -> list[tuple[float, float, float, float]]:
    """Every face big enough to edit, largest first (faces='all')."""
    from engine.face.detect import MIN_EYE_DISTANCE, detect_faces

    found = detect_faces(photo.rgb8(), detector, upsample=1)
    faces = [f for f in found if f.eye_distance >= MIN_EYE_DISTANCE]
    if not found:
        raise FATError(f"no face found in {photo.path}. Use photos with clearly visible, roughly frontal faces "
                       "(or detector = \"cnn\" in the recipe).", EXIT_NO_FACE)
    if not faces:
        raise FATError(f"the {len(found)} face(s) in {photo.path} are too small to edit (at least "
                       f"{MIN_EYE_DISTANCE:.0f} px between the eyes); use a larger photo.", EXIT_NO_FACE)
    return [f.box for f in faces]


def around(rgb8: np.ndarray, box, margin: float = 0.6) -> np.ndarray:
    """The face's neighbourhood: a detection there costs a fraction of one over a whole group photo."""
    left, top, right, bottom = box
    pad = margin * max(right - left, bottom - top)
    h, w = rgb8.shape[:2]
    return rgb8[max(0, int(top - pad)): min(h, int(bottom + pad)), max(0, int(left - pad)): min(w, int(right + pad))]


def measure(rgb8: np.ndarray, detector: str, box, score: str | None) -> float | None:
    """The attribute's landmark score of the face in `box` (None when no score applies or no face is found).
    Scores are ratios to the eye distance, so the crop around the face gives the photo's value."""
    if score is None:
        return None
    from engine.bank.measure import scores
    from engine.face.detect import detect_faces

    near = around(rgb8, box)
    faces = detect_faces(near, detector, upsample=0) or detect_faces(near, detector, upsample=1)
    return round(float(scores(faces[0].landmarks)[score]), 4) if faces else None


def run_task(task: Task, progress: Callable | None = None, threads: int | None = None) -> dict:
    """Edit, save the output and its sidecar; the report record. Failures are records too, never raised
    (a batch goes on), except Ctrl-C."""
    start = time.perf_counter()
    record = {"edit": task.edit, "input": task.input, "output": task.output, "guide": task.guide,
              "strength": task.strength, "faces": task.faces, "status": "done"}
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        record.update(_edit_and_save(task, progress))
    except (Exception, MemoryError) as e:
        code, message = describe_failure(e, audience="recipe")
        record.update(status="failed", exit_code=code, error=message)
    record["seconds"] = round(time.perf_counter() - start, 3)
    if record["status"] == "done":
        _write_sidecar(task, record)
    return record


def _edit_and_save(task: Task, progress: Callable | None) -> dict:
    from engine.api import edit
    from engine.bank.measure import scores
    from engine.io.images import load_photo, save_photo
    from engine.options import EditOptions

    check_output_path(Path(task.output), [Path(task.input)] + ([Path(task.guide)] if task.guide else []))
    options = EditOptions.from_mapping({**task.options, "strength": task.strength}, f"edit {task.edit!r}")
    bb = _MODELS(options, lambda _stage: None)
    extra = {"bank": bank_for(options.bank, bb.name)} if options.attribute else {}
    photo = load_photo(task.input)
    boxes = face_boxes(photo, options.detector) if task.faces == "all" else [None]
    if task.faces not in ("all", "largest"):
        options.face = int(task.faces)
    score = score_name(task.options)
    current, faces, timings = photo.rgb, [], {}
    for box in boxes:
        options.box = box
        result = edit(current if box is not None and faces else task.input, task.guide, options=options,
                      backbone=bb, progress=progress, **extra)
        face = result.frame.ref.face
        faces.append({"box": [round(v, 1) for v in face.box], "identity_distance": result.descriptor_distance,
                      "before": round(float(scores(face.landmarks)[score]), 4) if score else None,
                      "after": measure(result.rgb8(), options.detector, face.box, score),
                      "settings": result.settings})
        for k, v in result.timings.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
        current = result.image
    save_photo(photo, current, Path(task.output))
    return {"faces_edited": len(faces), "backbone": faces[0]["settings"]["backbone"],
            "precision": faces[0]["settings"].get("precision_used"),
            "identity_distance": round(max(f["identity_distance"] for f in faces), 4),
            "measure": score, "before": _mean([f["before"] for f in faces]),
            "after": _mean([f["after"] for f in faces]), "timings_s": timings,
            "face_details": [{k: v for k, v in f.items() if k != "settings"} for f in faces],
            "settings": faces[0]["settings"]}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def _write_sidecar(task: Task, record: dict) -> None:
    """Written after the output: an output without its sidecar is redone by the next run."""
    atomic_write_json(sidecar_of(task), {"settings": record.get("settings"), "timings_s": record.get("timings_s"),
                                         "batch": {"key": task.key, "task": task.to_dict(), "record": record}})
