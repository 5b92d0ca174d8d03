"""Bend the guide's crop onto the reference's landmark geometry before compositing.

Similarity alignment matches the faces as wholes; a mouth that is wider, narrower or
turned still sits where the guide had it. Here the guide's landmarks are moved to
target positions and the crop follows smoothly: piecewise-affine over the Delaunay
triangulation (`affine`) or a thin-plate spline (`tps`). The targets keep what the guide
brings: outside the region every point goes to the reference's position; the region's
own points keep the guide's shape (its opening), moved by the affine map that takes the
guide's anchor points of that region (mouth corners, eye corners) onto the reference's.
Border points are fixed, so the crop's edges never move.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import cv2
import numpy as np

from engine.face.detect import eye_distance
from engine.face.regions import WARPS


def target_landmarks(guide: np.ndarray, reference: np.ndarray, region_points: tuple[int, ...],
                     anchors: tuple[int, ...], per_half: bool = False) -> np.ndarray:
    """Where each guide landmark should go: the reference's positions, except the region's own points, which
    keep the guide's shape under the affine map of its anchors onto the reference's (`per_half`, with anchors on
    both eyes and the nose: then each half of the face stretched to the reference's, foreshortened())."""
    target = np.asarray(reference, float).copy()
    if region_points and anchors:
        m = anchor_similarity(guide, reference, anchors)
        if m is not None:
            placed = np.asarray(guide, float) @ m[:, :2].T + m[:, 2]
            if per_half and set(anchors) >= set(SIDES[0] + SIDES[1] + MIDLINE):
                placed = foreshortened(placed, guide, reference, region_points)
            target[list(region_points)] = placed[list(region_points)]
    return target


SIDES = ((36, 39), (42, 45))  # each eye's corners: how wide each half of the face looks
MIDLINE = (27, 30, 33)  # the nose


def foreshortened(placed: np.ndarray, guide: np.ndarray, reference: np.ndarray, points: tuple[int, ...],
                  limits: tuple[float, float] = (0.5, 1.5)) -> np.ndarray:
    """`placed` (the guide's landmarks under one similarity onto the reference) with `points` moved along the
    reference's eye line so that each half of the shape takes the width of its half of the reference's face: on a
    turned head the far half looks narrower and the near one wider, which one similarity cannot give (a frontal
    smile placed on a turned head put the far mouth corner across the jaw line, so the whole bend was cut, to 0.63
    of the way on a turned face of ../shared/faces). A point's offset from the nose, along the eye line, is kept in
    units of its half's eye offset (the guide's, then the reference's; their ratio within `limits` of the
    similarity's); across the eye line the similarity places it. A point on the nose's line stays on it."""
    ref, own, out = np.asarray(reference, float), np.asarray(guide, float), placed.copy()

    def frame(marks: np.ndarray) -> tuple[np.ndarray, float, list[float]]:  # (eye-line axis, nose, each eye's offset)
        u = marks[SIDES[1][1]] - marks[SIDES[0][0]]
        u = u / max(float(np.linalg.norm(u)), 1e-9)
        mid = float(marks[list(MIDLINE)].mean(0) @ u)
        return u, mid, [float(marks[list(side)].mean(0) @ u) - mid for side in SIDES]

    (u, mid, eyes), (ug, mid_g, eyes_g) = frame(ref), frame(own)
    scale = float(np.linalg.norm(placed[SIDES[1][1]] - placed[SIDES[0][0]])) / max(
        float(np.linalg.norm(own[SIDES[1][1]] - own[SIDES[0][0]])), 1e-9)  # the similarity's
    idx = list(points)
    offset = own[idx] @ ug - mid_g
    along = np.empty(len(idx))
    for k, (e, eg) in enumerate(zip(eyes, eyes_g, strict=True)):
        half = offset < 0 if k == 0 else offset >= 0
        ratio = e / eg / scale if abs(eg) > 1e-6 and e * eg > 0 else 1.0
        along[half] = offset[half] * scale * float(np.clip(ratio, *limits))
    out[idx] = placed[idx] + np.outer(mid + along - placed[idx] @ u, u)
    return out


def reshape_targets(guide: np.ndarray, reference: np.ndarray, groups: tuple[tuple[int, ...], ...],
                    anchors: tuple[tuple[int, ...], ...], face_scaled_opening: float = 0.0,
                    per_half: bool = False) -> np.ndarray:
    """For a reshaped region: each group's guide shape placed by its own anchors on the reference (each eye by its
    own corners: one fit for both eyes put a turned guide's far eye on the cheek); the rest where the reference has
    it. `face_scaled_opening` (Region.face_scaled_opening): with two anchors (corners), how far the shape across
    their line takes the faces' scale (eye distances) instead of the corners'."""
    target = np.asarray(reference, float).copy()
    for group, anchor in zip(groups, anchors, strict=True):
        placed = target_landmarks(guide, reference, group, anchor, per_half)
        if face_scaled_opening and len(anchor) == 2:
            placed = scaled_opening(placed, guide, reference, group, anchor, face_scaled_opening)
        target[list(group)] = placed[list(group)]
    return target


def scaled_opening(placed: np.ndarray, guide: np.ndarray, reference: np.ndarray, group: tuple[int, ...],
                   corners: tuple[int, int], share: float) -> np.ndarray:
    """The group's points, placed by its two corners, with their distance from the corners' line rescaled by
    (face scale / corner scale) ** share: a mouth's opening is the jaw's drop, which goes with the size of the face,
    while its width goes with the mouth's own (0: the corners' scale, 1: the faces'). The lips' height is scaled
    along with the opening (a closed guide mouth's lips only thicken or thin by the same factor)."""
    a, b = reference[corners[0]], reference[corners[1]]
    guide_width = float(np.linalg.norm(guide[corners[1]] - guide[corners[0]]))
    if guide_width <= 0:  # degenerate corners: placed as they are
        return placed
    corner_scale = float(np.linalg.norm(b - a)) / guide_width  # (two anchors: the similarity's exact scale)
    face_scale = eye_distance(reference) / eye_distance(guide)
    along = (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
    across = np.array([-along[1], along[0]])
    idx = list(group)
    offset = placed[idx] - (a + b) / 2
    out = placed.copy()
    out[idx] = placed[idx] + np.outer((offset @ across) * ((face_scale / corner_scale) ** share - 1), across)
    return out


def _crosses(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each path p0[i] -> p1[i] crosses each segment a[j] -> b[j] (a (paths, segments) array)."""
    def side(o: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # sign of (u - o) x (v - o)
        return np.sign((u[..., 0] - o[..., 0]) * (v[..., 1] - o[..., 1])
                       - (u[..., 1] - o[..., 1]) * (v[..., 0] - o[..., 0]))

    p0, p1, a, b = p0[:, None], p1[:, None], a[None], b[None]
    return (side(p0, p1, a) * side(p0, p1, b) <= 0) & (side(a, b, p0) * side(a, b, p1) < 0)  # through a vertex too


def uncrossed_share(source: np.ndarray, target: np.ndarray, moving: tuple[int, ...], line: tuple[int, ...],
                    steps: int = 12, margin: float = 0.9) -> float:
    """The share (0..1) of the move source -> target under which no moving point that starts inside the polyline
    `line` (the jaw, closed across its ends) crosses it, with a `margin` short of the crossing: a turned guide's
    mouth placed on a frontal face crossed the jaw, and the bend folded the cheek over itself. Points on or
    beyond the line (eyes above the jaw's ends) move freely; a move that is not finite is not made."""
    source, target = np.asarray(source, float), np.asarray(target, float)
    if not np.isfinite(target).all():
        return 0.0
    polygon = source[list(line)].astype(np.float32).reshape(-1, 1, 2)
    points = [i for i in moving if i not in line
              and cv2.pointPolygonTest(polygon, (float(source[i, 0]), float(source[i, 1])), False) > 0]
    a, b = source[list(line[:-1])], source[list(line[1:])]

    def keeps(share: float) -> bool:
        moved = source[points] + share * (target[points] - source[points])
        return not _crosses(source[points], moved, a, b).any()

    return 1.0 if not points else largest_share(keeps, steps, margin)


def largest_share(keeps: Callable[[float], bool], steps: int, margin: float) -> float:
    """The largest share (0..1) of a move that `keeps(share)` allows, by bisection (1 when the whole move is allowed),
    `margin` short of the first share it does not."""
    if keeps(1.0):
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if keeps(mid) else (low, mid)
    return margin * low


def _border(size: tuple[int, int], n: int = 8) -> np.ndarray:
    h, w = size
    xs, ys = np.linspace(0, w - 1, n), np.linspace(0, h - 1, n)
    return np.vstack([np.c_[xs, np.zeros(n)], np.c_[xs, np.full(n, h - 1)], np.c_[np.zeros(n), ys],
                      np.c_[np.full(n, w - 1), ys]])


FOLD_AREA = 0.005  # x eye distance squared: a mesh triangle turned over with more area than this folds the picture


def unfolded_share(source: np.ndarray, target: np.ndarray, size: tuple[int, int], least: float, steps: int = 12,
                   margin: float = 0.9) -> float:
    """The share (0..1) of the move source -> target under which no triangle of the bend's mesh (the Delaunay
    triangles of the moved points and the crop's border, as bend_offsets lays them for these points) is turned over
    with more than `least` px^2 of area at its source: a frontal example's smile placed on a turned head turned the
    cheek's triangles over, and the bend drew the hair and the jaw as a zigzag. Slivers that turn over (a closed
    mouth's inner-lip points, a few px^2) fold nothing visible and do not count. With a `margin` short of the first
    fold, as uncrossed_share; a move that is not finite is not made. The points given are checked: a brow block's
    copies (thicken), the fade and a thin-plate bend's own folds are not."""
    source, target = np.asarray(source, float), np.asarray(target, float)
    if not np.isfinite(target).all():
        return 0.0
    border = _border(size)
    src = np.vstack([source, border])

    def keeps(share: float) -> bool:
        dst = np.vstack([source + share * (target - source), border])
        tris = delaunay(dst)
        if len(tris) == 0:
            return True
        before, after = _signed_areas(src, tris), _signed_areas(dst, tris)
        return not ((np.sign(before) != np.sign(after)) & (np.abs(before) > least)).any()

    return largest_share(keeps, steps, margin)


def _signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Each triangle's area, positive or negative by its corners' turn."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def anchor_similarity(guide: np.ndarray, reference: np.ndarray, anchors: tuple[int, ...]) -> np.ndarray | None:
    """2x3 similarity taking the guide's anchor landmarks onto the reference's, least squares over every anchor
    (None if degenerate). OpenCV's default RANSAC threshold is 3 px of whatever resolution the crop has, so it
    dropped a turned guide's nose from a smile's anchors at a large work factor and kept it at a small one."""
    m, _ = cv2.estimateAffinePartial2D(guide[list(anchors)].astype(np.float32),
                                       reference[list(anchors)].astype(np.float32), ransacReprojThreshold=1e9)
    return m


def move_rigidly(image: np.ndarray, landmarks: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole crop moved by one similarity (no local bending), and its landmarks with it."""
    h, w = image.shape[:2]
    moved = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return moved, landmarks @ m[:, :2].T + m[:, 2]


def delaunay(points: np.ndarray) -> np.ndarray:
    """(T, 3) vertex indices of the Delaunay triangles of N x 2 points (OpenCV's Subdiv2D: the same triangles as
    Qhull's for points in general position, without scipy.spatial's import, a quarter second of a new process;
    where points coincide or four share a circle either choice is a Delaunay triangulation, and the map over
    them may differ from scipy's)."""
    pts = np.asarray(points, np.float64)
    x0, y0 = np.floor(pts.min(0)) - 1
    x1, y1 = np.ceil(pts.max(0)) + 2
    subdiv = cv2.Subdiv2D((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    subdiv.insert([(float(x), float(y)) for x, y in pts])
    corners = np.asarray(subdiv.getTriangleList(), np.float64).reshape(-1, 3, 2)  # () when all lie on a line
    gap = np.abs(corners[:, :, None, :] - pts[None, None]).sum(-1)  # T x 3 x N: each corner is one of the points
    found = gap.min(-1) < 1e-2
    return gap.argmin(-1)[found.all(1)]


def piecewise_affine(dst: np.ndarray, src: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 2): each pixel centre mapped by the affine map of the Delaunay triangle of `dst` it lies in, which
    takes the triangle's corners to the same-index points of `src` (NaN outside every triangle). Pixels are sorted
    into triangles by rasterising them; one on an edge, which rasterising may give to the neighbour, is checked
    with its barycentric coordinates and found again among all triangles."""
    h, w = size
    dst, src = np.asarray(dst, np.float64), np.asarray(src, np.float64)
    tris = delaunay(dst)
    if len(tris) == 0:
        return np.full((h, w, 2), np.nan)
    d0, s0 = dst[tris[:, 0]], src[tris[:, 0]]
    edges = np.stack([dst[tris[:, 1]] - d0, dst[tris[:, 2]] - d0], -1)  # T x 2 x 2, columns = edge vectors
    det = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    keep = np.abs(det) > 1e-9
    tris, d0, s0, edges = tris[keep], d0[keep], s0[keep], edges[keep]
    inverse = np.linalg.inv(edges)
    moves = np.stack([src[tris[:, 1]] - s0, src[tris[:, 2]] - s0], -1)
    label = np.full((h, w), -1, np.int32)
    for t, corner in enumerate(dst[tris]):
        cv2.fillConvexPoly(label, np.round(corner * 16).astype(np.int32), t, cv2.LINE_8, 4)
    grid = np.stack(np.mgrid[0:h, 0:w][::-1], -1).reshape(-1, 2).astype(np.float64)
    label = label.ravel()

    def weights(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.einsum("nij,nj->ni", inverse[t], p - d0[t])

    def inside(lam: np.ndarray) -> np.ndarray:
        return (lam >= -1e-9).all(1) & (lam.sum(1) <= 1 + 1e-9)

    label[label < 0] = 0  # not drawn (outside every triangle): left open below
    lam = weights(label, grid)
    settled = inside(lam)
    open_ = np.flatnonzero(~settled)  # the few pixels on edges: their triangle is a neighbouring pixel's
    padded = np.pad(label.reshape(h, w), 1, mode="edge").ravel()
    for dy, dx in itertools.product((-1, 0, 1), (-1, 0, 1)):
        t = padded[(open_ // w + 1 + dy) * (w + 2) + open_ % w + 1 + dx]
        here = weights(t, grid[open_])
        ok = inside(here)
        label[open_[ok]], lam[open_[ok]], settled[open_[ok]] = t[ok], here[ok], True
        open_ = open_[~ok]
    if len(open_):  # the rest (a sliver drawn over by its neighbours): every triangle at once
        every = np.einsum("tij,ntj->nti", inverse, grid[open_, None] - d0[None])
        ok = inside(every.reshape(-1, 2)).reshape(len(open_), -1)
        found = ok.any(1)
        t = ok.argmax(1)[found]
        at = open_[found]
        label[at], lam[at], settled[at] = t, every[found, t], True
    mapped = s0[np.maximum(label, 0)] + np.einsum("nij,nj->ni", moves[np.maximum(label, 0)], lam)
    mapped[~settled] = np.nan
    return mapped.reshape(h, w, 2)


def bend_offsets(size: tuple[int, int], source: np.ndarray, target: np.ndarray, method: str = "affine",
                 fade: np.ndarray | None = None) -> np.ndarray:
    """(h, w, 2) x/y offsets: output pixel p of a bend taking points `source` onto `target` reads the image at
    p + offset (scaled by `fade`, 1 where the points must land, 0 where nothing moves). Zero where nothing moves."""
    h, w = size
    if method == "none" or np.allclose(source, target):
        return np.zeros((h, w, 2), np.float32)
    border = _border((h, w))
    dst = np.vstack([target, border])  # inverse map: for each output pixel, where to read in the image
    src = np.vstack([source, border])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.c_[xx.ravel(), yy.ravel()]
    if method == "affine":
        mapped = piecewise_affine(dst, src, (h, w)).reshape(-1, 2)
        inside = np.isfinite(mapped[:, 0])
        mapped[~inside] = grid[~inside]
    elif method == "tps":
        # imported here: scipy.interpolate is 0.25-0.5 s of a new process, and only this warp needs it
        from scipy.interpolate import RBFInterpolator

        mapped = RBFInterpolator(dst, src - dst, kernel="thin_plate_spline", smoothing=1e-3)(grid) + grid
    else:
        raise ValueError(f"unknown warp {method!r}; use one of {', '.join(WARPS)}")
    offsets = mapped - grid
    if fade is not None:
        offsets = offsets * np.asarray(fade, np.float64).reshape(-1, 1)
    return offsets.reshape(h, w, 2).astype(np.float32)


def warp_to(image: np.ndarray, source: np.ndarray, target: np.ndarray, method: str = "affine",
            fade: np.ndarray | None = None) -> np.ndarray:
    """The image bent so that its points `source` land on `target` (both N x 2, x/y in its pixels).
    `fade` (h, w, 0..1) scales the bend: 1 where the points must land, 0 where the image must not move."""
    if method == "none" or np.allclose(source, target):
        return image.copy()
    return moved_by(image, bend_offsets(image.shape[:2], source, target, method, fade))


def moved_by(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The image read at each pixel + its offset (bend_offsets), bilinear."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image, xx + offsets[..., 0], yy + offsets[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT101)


def thicken(source: np.ndarray, target: np.ndarray, points: tuple[int, ...], above: float,
            below: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bend points that make `points` move as a block: a copy of each `above` px above it and one `below` px (per
    point) below moves with it, so a raised brow rises whole instead of its hair stretching towards the eye."""
    idx = list(points)
    up = np.c_[np.zeros(len(idx)), np.full(len(idx), -above)]
    down = np.c_[np.zeros(len(idx)), np.asarray(below, float)]
    return (np.vstack([source, source[idx] + up, source[idx] + down]),
            np.vstack([target, target[idx] + up, target[idx] + down]))
