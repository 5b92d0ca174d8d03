"""From a photo to an aligned face crop and back: detect -> align -> mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.align import template_transform, transform_points, warp_crop
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

    @property
    def size(self) -> tuple[int, int]:
        return self.crop.shape[0], self.crop.shape[1]


def align_face(photo: Photo, template: dict, detector: str = "hog", index: int | None = None,
               box: tuple[float, float, float, float] | None = None, what: str = "image") -> AlignedFace:
    face, n = find_face(photo.rgb8(), detector, index, box, what)
    m = template_transform(face.landmarks, template)
    h, w = template["size"]
    crop = warp_crop(photo.rgb, m, (int(h), int(w)))
    return AlignedFace(face, m, crop, transform_points(m, face.landmarks), n)


def crop_mask(aligned: AlignedFace, region: str, user: np.ndarray | None = None) -> np.ndarray:
    """Region mask in crop pixels; a user mask (in photo pixels) overrides the region."""
    if user is not None:
        import cv2

        h, w = aligned.size
        return np.clip(cv2.warpAffine(user.astype(np.float32), aligned.transform, (w, h),
                                      flags=cv2.INTER_AREA), 0, 1)
    return region_mask(aligned.landmarks, region, aligned.size)
