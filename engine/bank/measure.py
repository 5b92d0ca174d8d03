"""Attribute scores and head pose from the 68 landmarks (iBUG 300-W layout), in the aligned crop.

Each score is a ratio to the distance between the eye centres (IOD), so it means the same on every face
size; the crop is roll-aligned, so "up" is the crop's y axis. A bank measures every face; a label file
(engine/bank/labels.py) wins where it has a column for the attribute. Thresholds (LABEL_RULES):

- mouth_open: mean inner-lip gap (61-67, 62-66, 63-65) / IOD > 0.08, the judges' "open" line (README of
  ../shared/eval: closed < 0.05, noise floor 0.04). On the 39 labelled faces of ../shared/faces closed mouths
  measure 0.000-0.063 except two lips-apart smiles (0.084, 0.104), open ones >= 0.104 except one mouth hidden
  by a microphone (0.060): 3 of 39 disagree with the eye labels, at any line between 0.065 and 0.10.
- smiling: mouth width (48-54) / IOD > 0.95, or corner lift (mouth centre y - corners y) / IOD > 0.04 while
  the width is > 0.85. Neutral mouths there are 0.68-0.90 IOD wide with corners within 0.04 of level (one
  0.09); smiles 0.93-1.23 wide, corners lifted 0.05-0.23. 4 of 39 disagree (a tiny-faced closed smile, a
  lopsided one, a man speaking, a tinted-glasses face).
- eyes_closed: eye aspect ratio (lid gaps 37-41, 38-40 / eye width 36-39; mean of both eyes) < 0.2, the
  common blink-detector line (Soukupova and Cech 2016: open eyes ~0.25-0.35). A squinting laugh measures
  0.15-0.19 and is then counted as closed (2 of 39 here): give labels for a real blink bank. An edit whose
  closed-eye pixels come from such a measured squint says so (SQUINT_FROM; engine/bank/edit.py advice).
- brows_raised: mean brow-point distance to its eye centre / IOD > 0.50. Neutral faces measure 0.34-0.46
  (one wide-eyed laugh 0.50); a raised brow adds ~0.1 IOD. Provisional: no labelled raised-brow photos here.

Pose (proxies, not degrees): yaw = nose tip's horizontal offset from the eye-centre midpoint / IOD;
pitch = (nose tip y - eye line y) / (mouth centre y - eye line y) - 0.5; roll = eye line angle (radians)
in the photo (the crop removes it, so it matters only for the photo's look, not the crop's).
"""

from __future__ import annotations

import numpy as np

from engine.face.detect import eye_distance, inner_lip_gap

SCORES = ("mouth_open", "mouth_width", "corner_lift", "eye_aspect", "brow_height")


def _iod(p: np.ndarray) -> float:
    return eye_distance(p) + 1e-6  # never divide by zero on degenerate landmarks


def scores(landmarks: np.ndarray) -> dict[str, float]:
    p = np.asarray(landmarks, np.float64)
    iod = _iod(p)
    gap = inner_lip_gap(p)
    width = np.linalg.norm(p[54] - p[48])
    centre_y = (p[62, 1] + p[66, 1] + p[51, 1] + p[57, 1]) / 4
    lift = centre_y - (p[48, 1] + p[54, 1]) / 2

    def ear(e: np.ndarray) -> float:
        return (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * np.linalg.norm(e[0] - e[3]) + 1e-6)

    eyes = (ear(p[36:42]) + ear(p[42:48])) / 2
    brow = np.mean([np.linalg.norm(p[17:22] - p[36:42].mean(0), axis=1).mean(),
                    np.linalg.norm(p[22:27] - p[42:48].mean(0), axis=1).mean()])
    return {"mouth_open": gap / iod, "mouth_width": width / iod, "corner_lift": lift / iod,
            "eye_aspect": float(eyes), "brow_height": brow / iod}


SQUINT_FROM = 0.15  # eye aspect ratio: a measured "closed" eye at or above this is a narrowed one (a laugh)


def measured_squint(bank_entry: dict, eye_aspect: float) -> bool:
    """A face counted as eyes_closed by the landmark rule, not by a label, whose eyes are only narrowed: its pixels
    give a squint, not a blink."""
    return bank_entry.get("label_sources", {}).get("eyes_closed") != "labels" and eye_aspect >= SQUINT_FROM


def labels_from_scores(s: dict[str, float]) -> dict[str, int]:
    """The documented rules above: 1 = has the attribute, 0 = has not."""
    smiling = s["mouth_width"] > 0.95 or (s["corner_lift"] > 0.04 and s["mouth_width"] > 0.85)
    return {"smiling": int(smiling), "mouth_open": int(s["mouth_open"] > 0.08),
            "eyes_closed": int(s["eye_aspect"] < 0.2), "brows_raised": int(s["brow_height"] > 0.50)}


def pose(landmarks_photo: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) proxies from landmarks in photo pixels (see the module note)."""
    p = np.asarray(landmarks_photo, np.float64)
    le, re = p[36:42].mean(0), p[42:48].mean(0)
    roll = np.arctan2(re[1] - le[1], re[0] - le[0])
    c, s = np.cos(-roll), np.sin(-roll)
    q = (p - (le + re) / 2) @ np.array([[c, s], [-s, c]])  # rotate so the eye line is horizontal
    iod = _iod(q)
    mouth_y = q[[48, 54, 51, 57], 1].mean()
    yaw = q[30, 0] / iod
    pitch = q[30, 1] / (mouth_y + 1e-6) - 0.5
    return np.array([yaw, pitch, roll], np.float32)
