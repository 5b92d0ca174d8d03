"""From a photo to an aligned face crop and back: detect -> align -> mask."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.align import scale_of, template_transform, transform_points, warp_crop
from engine.faces import Face, find_face
from engine.imageio import Photo
from engine.masks import region_mask


@dataclass
class AlignedFace:
    face: Face
    transform: np.ndarray  # 2x3, photo -> crop
    crop: np.ndarray  # float32 h x w x 3, 0..255
    landmarks: np.ndarray  # 68 x 2 in crop pixels
    faces_found: int
    factor: int = 1  # crop size = template size * factor

    @property
    def size(self) -> tuple[int, int]:
        return self.crop.shape[0], self.crop.shape[1]


MAX_WORK_FACTOR = 4


def work_factor(m: np.ndarray) -> int:
    """How many times the template size matches the face's own resolution (1..4)."""
    return int(np.clip(round(1.0 / max(scale_of(m), 1e-6)), 1, MAX_WORK_FACTOR))


def align_face(photo: Photo, template: dict, detector: str = "hog", index: int | None = None,
               box: tuple[float, float, float, float] | None = None, what: str = "image",
               factor: int | None = 1) -> AlignedFace:
    """Crop at `factor` x the template size; factor None = the face's own resolution, so a
    paste-back is not a blurry upscale."""
    face, n = find_face(photo.rgb8(), detector, index, box, what)
    m_template = template_transform(face.landmarks, template)
    k = work_factor(m_template) if factor is None else factor
    m = m_template * k
    h, w = (int(v) * k for v in template["size"])
    crop = warp_crop(photo.rgb, m, (h, w))
    return AlignedFace(face, m, crop, transform_points(m, face.landmarks), n, k)


def crop_mask(aligned: AlignedFace, region: str, user: np.ndarray | None = None) -> np.ndarray:
    """Region mask in crop pixels; a user mask (in photo pixels) overrides the region."""
    if user is not None:
        h, w = aligned.size
        return np.clip(cv2.warpAffine(user.astype(np.float32), aligned.transform, (w, h),
                                      flags=cv2.INTER_LINEAR), 0, 1)
    return region_mask(aligned.landmarks, region, aligned.size)
