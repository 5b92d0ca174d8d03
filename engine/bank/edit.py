"""The attribute edit (no guide photo): the bank's nearest examples give the start image's pixels and the
feature direction; target = F(ref) + strength * (mean F(with) - mean F(without)) on the attribute layers,
compared inside the attribute's region. Negative strengths remove the attribute (the "without" examples
give the pixels); 0 returns the reference unchanged. Several strengths are each warm-started from the
previous result (same sign): the start carries the previous optimisation's change forward, bent on to this
strength's shape where the start is bent to the example's (mouths, smiles, eyes, brows: the bend goes `strength`
of the way; above 1, further than the example's own shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.bank.attributes import ATTRIBUTES
from engine.bank.build import face_features
from engine.bank.choose import DEFAULT_K, Choice, identity_distances, nearest
from engine.bank.measure import SCORES, SQUINT_FROM, labels_from_scores, measured_squint, pose, scores
from engine.bank.shade import lip_in, lip_shade, shaded
from engine.bank.shape import INNER_LIPS, bent_to_mean_shape, closed_to, mean_shape
from engine.bank.store import Bank, check_backbone, load_bank
from engine.bank.where import default_bank
from engine.errors import EXIT_USAGE, FATError, arg_ref, image_ref, option_ref
from engine.face.detect import Face
from engine.face.frame import AlignedFace, FaceFrame, align_face, region_points, reshaped_frame, to_crop
from engine.face.masks import lookup_region, region_mask, soften_user_mask, unbent_part, user_mask
from engine.face.regions import Region
from engine.io.files import sha256_file
from engine.io.images import Photo, from_array, load_photo, luma
from engine.objective.composite import frame_start, start_image
from engine.objective.optimise import CancelToken, Problem, Progress, solve
from engine.objective.recipes import Recipe
from engine.options import EditOptions


def bank_of(bank: Bank | str | Path | None, backbone: str) -> Bank:
    if isinstance(bank, Bank):
        return bank
    return load_bank(Path(bank) if bank else default_bank(backbone))


def same_person_threshold(spec: dict, identity_layer: str) -> float | None:
    """Under this identity distance two faces are taken for one person (stricter than the backbone's own
    same/different line, so that a look-alike stranger is not preferred)."""
    if identity_layer == spec.get("descriptor_tap") and spec.get("descriptor_distance_threshold"):
        return 0.75 * float(spec["descriptor_distance_threshold"])
    return None


def example_pixels(bank: Bank, idx: np.ndarray, size: tuple[int, int], factor: int, ref: np.ndarray,
                   mask: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """(crop, landmarks) of the start's pixel source at the work size: the nearest example, or the mean of
    the `recipe.fuse` nearest after each is colour-matched to the reference."""
    from engine.objective.composite import colour_match

    h, w = size
    scale = factor / bank.meta["crop_factor"]
    crops, marks = [], []
    for i in idx[: max(1, int(recipe.fuse))]:
        c = np.clip(cv2.resize(bank.crops[i].astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
                               if scale > 1 else cv2.INTER_AREA), 0, 255)
        crops.append(c if len(idx[: int(recipe.fuse)]) == 1 else colour_match(c, ref, mask, recipe))
        marks.append(bank.landmarks[i] * factor)
    return np.mean(crops, axis=0).astype(np.float32), np.mean(marks, axis=0)


ATYPICAL = 1.25


def typical_first(bank: Bank, idx: np.ndarray, value: int, attribute: str, recipe: Recipe,
                  hairy: np.ndarray | None = None, same: np.ndarray | None = None,
                  usable: np.ndarray | None = None, parted: np.ndarray | None = None) -> np.ndarray:
    """The k chosen examples (nearest first) reordered for the start image's pixels; each flag is a bool per example.
    Those not `usable` (showing the side's value no more clearly than the reference: clearer_than) go last. Then those
    `parted` (lips more open than the reference's, where an attribute is taken away: their teeth showed as a white line
    between the closed lips). Then those whose landmark measurements disagree with their labels (a mouth labelled open
    but hidden by a microphone measures closed: not a face to paste from, for any attribute). Among the rest, the
    reference's own person's first (`same`: "fix the blink from the next shot"), then those not `hairy` (their upper lip
    reads as hair and is darker than the reference's, engine/bank/shade.py), then those whose attribute features are
    typical of the k (distance to the k's mean at most ATYPICAL x the median distance: a moustache among shaven faces is
    an odd one out); nearest first within. Then the attribute's `strongest_of` leading ones by how clearly they show it
    (among the own person's photos alone when one leads)."""
    def agrees(i: int) -> bool:
        measured = labels_from_scores(dict(zip(SCORES, map(float, bank.scores[i]), strict=True)))
        given = [a for a, src in bank.entries[i].get("label_sources", {}).items() if src == "labels"]
        labels = dict(zip(bank.attributes, bank.labels[i].tolist(), strict=True))
        return measured[attribute] == value and all(measured[a] == labels[a] for a in given if a in measured)

    def flags(given: np.ndarray | None, default: bool) -> np.ndarray:
        return np.full(len(idx), default) if given is None else np.asarray(given, bool)

    measured = np.array([agrees(i) for i in idx], bool)
    layers = list(recipe.attribute_layers)
    feats = np.concatenate([bank.features[k][idx].astype(np.float32).reshape(len(idx), -1)
                            / (np.linalg.norm(bank.features[k][idx].astype(np.float32)) / np.sqrt(len(idx)) + 1e-6)
                            for k in layers], axis=1)
    spread = np.linalg.norm(feats - feats.mean(0), axis=1)
    atypical = spread > ATYPICAL * np.median(spread) if len(idx) > 2 else np.zeros(len(idx), bool)
    hairy, same, usable, parted = flags(hairy, False), flags(same, False), flags(usable, True), flags(parted, False)
    keys = np.lexsort((np.arange(len(idx)), atypical, hairy, ~same, ~measured, parted, ~usable))
    reliable = (usable & ~parted & measured & ~atypical & ~hairy)[keys]
    own = same[keys]
    if own[0] and reliable[0]:  # the own person's reliable photos lead: the strongest is chosen among them only
        reliable &= own
    return strongest_first(bank, idx[keys], value, attribute, reliable=int(np.cumprod(reliable).sum()))


def strongest_first(bank: Bank, ordered: np.ndarray, value: int, attribute: str, reliable: int) -> np.ndarray:
    """The first `strongest_of` (engine/bank/attributes.py; `adding_strongest` for the "with" side where set) of
    the `reliable` leading ones (landmarks agree, typical, not shaded) reordered by how clearly each shows the
    side's value: the widest-open mouth for an opening, the most closed one for a closing, the toothier smile to
    add one. An unreliable example never moves ahead."""
    a = ATTRIBUTES[attribute]
    of, by = a.adding_strongest if value and a.adding_strongest else (a.strongest_of, a.score)
    top = ordered[:min(of, reliable)]
    score = bank.scores[top, SCORES.index(by)] * _direction(attribute, value)
    return np.concatenate([top[np.argsort(-score, kind="stable")], ordered[len(top):]])


def _direction(attribute: str, value: int) -> int:
    """+1 where a higher score shows the side's value more clearly, else -1."""
    return 1 if bool(value) == ATTRIBUTES[attribute].rises else -1


def clearer_than(bank: Bank, idx: np.ndarray, value: int, attribute: str, own: float) -> np.ndarray:
    """Which examples show the side's value more clearly than the reference itself (`own`: its score): a wider
    smile to add one, a narrower one to take it away, a lower eye to close one. Smiling +1 on a broad toothy smile
    took the pixels of a closed half-smile from the bank and made the face smile less (examples/obama_1.jpg, the
    default bank)."""
    score = bank.scores[idx, SCORES.index(ATTRIBUTES[attribute].score)]
    return (score - own) * _direction(attribute, value) > 0


PARTED = 0.02  # eye distances of inner-lip gap beyond the reference's own (measure.py mouth_open; closed < 0.05)

SAME_PHOTO = 12.0  # mean |difference| (0..255) of two aligned crops' luma, one photo however decoded: 3-7 measured on
# examples/ (a layer GIMP decoded against the bank's own decode); another photo, even of the same person: 34 or more
# (in RGB; luma, so that a black-and-white copy of a bank photo is still its own photo: GIMP's grayscale of biden_1
# took biden_1 as its example)
SAME_PHOTO_CANDIDATES = 8  # the crops compared: the nearest by identity (one photo is its own nearest)


def same_photo(bank: Bank, crop: np.ndarray, identity: np.ndarray, identity_layer: str) -> np.ndarray:
    """Which bank faces are this crop's own photo (bool per face): of the nearest by identity, those whose aligned
    crop differs from it by less than SAME_PHOTO on average."""
    same = np.zeros(len(bank), bool)
    if not len(bank):
        return same
    d_id = identity_distances(bank.features[identity_layer], identity)
    h, w = bank.crops.shape[1:3]
    small = luma(cv2.resize(np.asarray(crop, np.float32), (w, h), interpolation=cv2.INTER_AREA))
    for i in np.argsort(d_id)[:SAME_PHOTO_CANDIDATES]:
        same[i] = float(np.abs(small - luma(bank.crops[i])).mean()) < SAME_PHOTO
    return same


def _tensor(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float().to(dev)


def _examples(bank: Bank, idx: np.ndarray, dist: np.ndarray) -> list[dict]:
    return [{"file": bank.entries[i]["file"], "sha256": bank.entries[i]["sha256"], "face": bank.entries[i]["face"],
             "distance": round(float(d), 4)} for i, d in zip(idx, dist, strict=True)]


@dataclass
class Source:
    """What one sign of strength starts from: the "with" examples add the attribute, the "without" ones remove it."""

    crop: np.ndarray  # the example's crop at the work size (or the fusion of several)
    marks: np.ndarray  # its landmarks there
    keep: np.ndarray | None  # where change costs more (the example's attribute itself)
    composite: np.ndarray | None  # the start at strength 1 where nothing is bent (a bent one: per strength)
    used: np.ndarray  # the bank indices whose pixels were used
    mask: np.ndarray  # the edit region
    own: np.ndarray | None  # where the example's own pixels were laid (its mouth)
    # a region whose shape is the attribute (mouth, smile, eyes, brows: Region.reshape_anchors): the reference bent to
    # the example's shape as to a guide's (engine/face/frame.py reshaped_frame); its start and paste bend the same
    # way. None: unbent
    bent: FaceFrame | None = None


class AttributeEditor:
    """One reference, one attribute, one bank: aligned and chosen once, then edited at any strengths."""

    def __init__(self, bb, spec: dict, recipe: Recipe, options: EditOptions, bank: Bank, reference, mask,
                 log: Callable[[str], None]) -> None:
        check_backbone(bank, spec)
        self.bb, self.spec, self.recipe, self.options, self.bank, self.log = bb, spec, recipe, options, bank, log
        self.dev = bb.device
        self.photo: Photo = load_photo(reference)
        self.ref: AlignedFace = align_face(self.photo, spec["crop_template"], options.detector, options.face,
                                           options.box, image_ref("reference"), factor=None)
        self.region = options.edit_region
        attribute = ATTRIBUTES[options.attribute]
        region = lookup_region(self.region)
        # a region whose shape is the attribute (a mouth's opening, a smile's lift, an eye's opening, a brow's height)
        # takes the example's shape, as a guide's; with --warp none / similarity nothing is bent and the region's
        # unbent part stands for it. bench/bank_quality.py, bent against unbent: mouth_open mobileface mean 0.812 ->
        # 0.849 (>= 0.75 in 18/22 -> 21/22), opened 14/22 -> 13/22; smiling -1 0.770 -> 0.802 (>= 0.75 in 14/24 ->
        # 18/24), `happy` after 0.75 -> 0.76; smiling +1 0.792 -> 0.802 (13/15 both; happy +0.5 in 9/15 -> 8/15 once
        # a frontal example's smile on a turned head, celebahq_female_030321, is no longer bent so far that it folds,
        # warp.unfolded_share). The lips keep the person's own corners and colour (contact sheet)
        self.bends = region.reshape and options.warp in ("auto", "affine", "tps")
        unbent = lookup_region(region.unbent) if region.unbent else region
        spec_region = region if self.bends else unbent
        self.user_mask = (soften_user_mask(user_mask(mask, self.photo.rgb.shape[:2]), self.ref.face.eye_distance)
                          if spec_region.user_mask else None)
        self.mask = (to_crop(self.ref, self.user_mask) if self.user_mask is not None
                     else region_mask(self.ref.landmarks, spec_region, self.ref.size))
        # where change costs more in an unbent start (a bent one has its frame's): the region's own part, else its
        # unbent one's (a smile: the mouth opening, also where the reference's own pixels start the edit)
        self.keep_part = None if spec_region.user_mask else spec_region.keep or unbent.keep
        # where the example's pixels and folds can reach, for the moustache check (_hairy): a bent mouth or smile
        # reaches the skin above the upper lip as its unbent part does, though its own mask stops at the lips; also
        # the region of an edit that neither bends nor pastes (_own_source)
        self.reachable = (region_mask(self.ref.landmarks, unbent, self.ref.size)
                          if self.bends and unbent is not region else self.mask)
        self.spec_region = spec_region
        # the part where the example's own pixels start the edit: the attribute's own, at the reference's landmarks
        # (a smile: its whole mouth region; in its default region only), else the region's at the example's, as for
        # a guide photo (the mouth: the lips; its moustache and chin only as folds). bench/bank_quality.py: the
        # lips part made 12/22 mouths open (11 with the whole region) with mobileface >= 0.75 in 18/22 (17); for
        # smiles the region's part kept identity in 12-13/15 instead of 14/15, with the same 7/15 smiling
        own_part = attribute.pixels if attribute.pixels and self.region == attribute.region else None
        self.pixels = own_part or spec_region.pixels
        self.pixels_at_example = own_part is None
        self.pixel_mask = (region_mask(self.ref.landmarks, self.pixels, self.ref.size) * self.mask if self.pixels
                           else self.mask)
        layers = [*recipe.attribute_layers, *(k for k in recipe.identity_layers if k not in recipe.attribute_layers)]
        self.ref_features = face_features(bb, self.ref.crop, layers)
        self.identity_layer = next(iter(recipe.identity_layers))
        self.choice: Choice = nearest(bank, options.attribute, self.ref_features[self.identity_layer],
                                      pose(self.ref.face.landmarks), options.k, self.identity_layer,
                                      recipe.pose_weight, same_person_threshold(spec, self.identity_layer),
                                      exclude=self._own_photo(reference))
        log(f"attribute {options.attribute}: region {self.region}; nearest with: "
            + ", ".join(bank.entries[i]["name"] for i in self.choice.with_idx)
            + "; without: " + ", ".join(bank.entries[i]["name"] for i in self.choice.without_idx))
        self.direction = {k: (bank.features[k][self.choice.with_idx].astype(np.float32).mean(0)
                              - bank.features[k][self.choice.without_idx].astype(np.float32).mean(0))
                          for k in recipe.attribute_layers}
        self._examples: dict[bool, tuple[np.ndarray, np.ndarray, np.ndarray, Region] | None] = {}  # by sign
        self._sources: dict[tuple[bool, float], Source] = {}  # by sign and reach

    def source(self, strength: float) -> Source:
        """The start's source for the strength's sign, made once per sign (and, where the region bends, once per
        strength above 1: its bend reaches further, FaceFrame.reach; the example is chosen once per sign). A landmark
        region is the union of the reference's and the example's (an opening mouth reaches lower than the closed one
        it replaces)."""
        positive = strength > 0
        reach = max(1.0, abs(strength)) if self.bends else 1.0
        if (positive, reach) not in self._sources:
            self._sources[positive, reach] = self._made_source(positive, reach)
        return self._sources[positive, reach]

    def _example(self, positive: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, Region] | None:
        """(crop, landmarks, bank indices used, region to bend) of the example whose pixels start the edit for the
        sign, chosen once per sign; None where the reference shows the side's value more clearly than every chosen
        example (nothing to paste)."""
        if positive not in self._examples:
            c = self.choice
            idx, same, value = (c.with_idx, c.with_same, 1) if positive else (c.without_idx, c.without_same, 0)
            attribute = ATTRIBUTES[self.options.attribute]
            own_score = scores(self.ref.face.landmarks)[attribute.score]
            clearer = clearer_than(self.bank, idx, value, self.options.attribute, own_score)
            if not clearer.any():
                self.log(f"the reference shows {'' if positive else 'no '}{self.options.attribute} more clearly "
                         "than every chosen example: its own pixels start the edit")
                self._examples[positive] = None
                return None
            # the clearer ones, reliable, clean-lipped and typical first (typical_first puts the others last)
            idx = typical_first(self.bank, idx, value, self.options.attribute, self.recipe, self._hairy(idx), same,
                                clearer, None if positive else self._parted(idx))[: int(clearer.sum())]
            crop, marks = example_pixels(self.bank, idx, self.ref.size, self.ref.factor, self.ref.crop,
                                         self.pixel_mask, self.recipe)
            used = idx[: max(1, int(self.recipe.fuse))]
            region = self.spec_region
            if self.bends and positive and attribute.adding_mean_shape:
                shapes = [self.bank.landmarks[i] * self.ref.factor for i in c.with_idx]
                region = replace(region, shape_share=1.0, placed_per_half=True)
                opening = scores(self.ref.landmarks)["mouth_open"]
                if opening > scores(mean_shape(shapes, marks, region))["mouth_open"]:
                    # a face caught speaking: its own mouth and teeth, bent to the mean smile kept as open as it is
                    # (an example's closed grin stretched to that opening gave long, denture-like teeth)
                    crop, marks, used = self.ref.crop, self.ref.landmarks, used[:0]
                crop, marks = bent_to_mean_shape(crop, marks, shapes, region, opening)
            if self.bends and not positive and set(region_points(region)) >= INNER_LIPS:  # all examples parted
                crop, marks = closed_to(crop, marks, scores(self.ref.landmarks)["mouth_open"])
            if self.bends and positive and attribute.adding_pixels:
                region = replace(region, pixels=attribute.adding_pixels)
            self._examples[positive] = crop, marks, used, region
        return self._examples[positive]

    def _made_source(self, positive: bool, reach: float) -> Source:
        example = self._example(positive)
        if example is None:
            return self._own_source()
        crop, marks, used, region = example
        if self.bends:  # a squint pasted over an open eye left the reference's upper lashes above it
            bent = reshaped_frame(self.ref, self._as_guide(crop, marks), region, self.options.warp, reach)
            return Source(crop, marks, bent.keep, None, used, bent.mask, bent.own, bent)
        mask, pixel_mask = self.mask, self.pixel_mask
        if self.user_mask is None and self.recipe.region_union > 0:
            mask = np.maximum(mask, region_mask(marks, self.spec_region, self.ref.size))
            pixel_mask = (np.maximum(pixel_mask, region_mask(marks, self.pixels, self.ref.size)) * mask
                          if self.pixels else mask)
        keep = (region_mask(marks, self.keep_part, self.ref.size) * mask if self.keep_part else None)
        # the example's own pixels where the attribute says (its mouth); over the rest of the region only
        # its mid-scale folds (composite.folds_only), as for a guide photo's smile
        own = None
        if self.pixels_at_example and self.pixels:  # nothing is bent to the example's shape here
            own = unbent_part(self.pixels, marks, self.ref.landmarks, self.ref.size) * mask
        elif self.pixels:
            own = pixel_mask
        composite = start_image(self.options.init, self.ref.crop, crop, mask if self.pixels else pixel_mask,
                                self.options.seed, self.recipe, own, (self.ref.landmarks, marks))
        return Source(crop, marks, keep, composite, used, mask, own)

    def _parted(self, idx: np.ndarray) -> np.ndarray:
        """Which of the examples `idx` part their lips more than the reference (by PARTED eye distances), where the
        edit's region holds the lips: a smile taken away from a closed mouth with their pixels showed a line of teeth
        (CLI trial, jennifer_aniston_2 at strength -1), however closed they were bent (closed_to)."""
        if not set(region_points(self.spec_region)) >= INNER_LIPS:
            return np.zeros(len(idx), bool)
        own = scores(self.ref.landmarks)["mouth_open"]
        return self.bank.scores[idx, SCORES.index("mouth_open")] > own + PARTED

    def _hairy(self, idx: np.ndarray) -> np.ndarray:
        """Which of the examples `idx` have an upper lip that reads as hair, darker than the reference's
        (engine/bank/shade.py); none where the edit's region leaves the upper lip out (eyes, brows)."""
        if not lip_in(self.reachable, self.ref.landmarks):
            return np.zeros(len(idx), bool)
        factor = self.bank.meta["crop_factor"]
        own = lip_shade(self.ref.crop, self.ref.landmarks)
        return shaded(np.array([lip_shade(self.bank.crops[i], self.bank.landmarks[i] * factor) for i in idx]), own)

    def note(self, strength: float) -> str | None:
        """A remark for the user about this strength's result, else None: where no example showed the side's value
        more clearly than the face itself (nothing was pasted), the result stays close to the photo."""
        if strength == 0 or self._example(strength > 0) is not None:
            return None
        label = ATTRIBUTES[self.options.attribute].label
        if strength > 0:
            return (f"{label}: the face already shows it more clearly than the attribute bank's examples, so the "
                    "result stays close to the photo.")
        return f"{label}: the face shows too little of it to take away, so the result stays close to the photo."

    def notes(self, strength: float) -> tuple[str, ...]:
        """The remarks about this strength's result itself (note())."""
        return tuple(n for n in (self.note(strength),) if n)

    def advice(self, strength: float) -> tuple[str, ...]:
        """Remarks about the bank rather than this result, the same for every edit of this attribute and sign with it
        (a frontend may say them once): _few_examples() and _squinted_examples()."""
        if not strength:
            return ()
        return tuple(a for a in (self._few_examples(strength), self._squinted_examples(strength)) if a)

    def _few_examples(self, strength: float) -> str | None:
        """Where the bank holds fewer faces on the side that sets the edit than the k it would take
        (engine/bank/choose.py DEFAULT_K), the result follows those few (the default bank's one closed-eyes face is a
        laugh: a GIMP user saw a squint and no reason why). Not said where the user chose k."""
        idx = self.choice.with_idx if strength > 0 else self.choice.without_idx
        if self.options.k is not None or len(idx) >= DEFAULT_K:
            return None
        label = ATTRIBUTES[self.options.attribute].label
        faces = "1 example face" if len(idx) == 1 else f"{len(idx)} example faces"
        return (f"{label}: the attribute bank has only {faces} {'with' if strength > 0 else 'without'} it (an edit "
                f"looks for {DEFAULT_K}), so the result follows {'that face' if len(idx) == 1 else 'those faces'} "
                "closely; a bank built from more photos gives better edits (python -m engine bank build, README).")

    def _squinted_examples(self, strength: float) -> str | None:
        """Where eyes are closed with the pixels of faces that only squint (counted closed by the landmark rule, not
        labelled: engine/bank/measure.py measured_squint), the result narrows the eyes rather than closing them; a
        CLI user got a laugh's narrowed, ruddy eyes and only the remark about the bank's size."""
        if self.options.attribute != "eyes_closed" or strength <= 0:
            return None
        used = self.source(strength).used
        aspect = self.bank.scores[used, SCORES.index("eye_aspect")] if len(used) else np.zeros(0)
        if not len(used) or not all(measured_squint(self.bank.entries[i], a) for i, a in zip(used, aspect,
                                                                                          strict=True)):
            return None
        return (f"Eyes closed: the attribute bank's example ({', '.join(self.bank.entries[i]['name'] for i in used)}) "
                f"is not labelled closed-eyed and only narrows its eyes (eye aspect {float(aspect.max()):.2f}; a blink "
                f"measures under {SQUINT_FROM:g}), so the result narrows the eyes rather than closing them. For "
                "blinks, build a bank with photos of closed eyes labelled in an eyes_closed column (--labels, README).")

    def _own_source(self) -> Source:
        """The reference as its own source: nothing pasted (strength 0, or no example shows more than it does), and
        nothing bent, so the region is its unbent part (a smile: its mouth, cheeks and folds; `reachable`)."""
        mask = self.reachable
        keep = region_mask(self.ref.landmarks, self.keep_part, self.ref.size) * mask if self.keep_part else None
        return Source(self.ref.crop, self.ref.landmarks, keep, self.ref.crop.copy(), np.zeros(0, int), mask, None)

    def _own_photo(self, reference) -> np.ndarray:
        """The reference's own photo is never its own example (a bank built from the photos being edited): the same
        file, or the same pixels however they came (GIMP sends a layer's pixels, never the file: a GIMP edit of a
        photo in the bank took that photo as its own example)."""
        same = same_photo(self.bank, self.ref.crop, self.ref_features[self.identity_layer], self.identity_layer)
        if isinstance(reference, (str, Path)):
            digest = sha256_file(Path(reference))
            same |= np.array([e["sha256"] == digest for e in self.bank.entries], bool)
        return same

    def targets(self, strength: float) -> tuple[dict, dict]:
        ref_f = {k: torch.from_numpy(v[None]).to(self.dev) for k, v in self.ref_features.items()}
        attr = {k: ref_f[k] + strength * torch.from_numpy(self.direction[k][None]).to(self.dev)
                for k in self.recipe.attribute_layers}
        return ref_f, attr

    def start(self, strength: float) -> np.ndarray:
        src = self.source(strength)
        if src.bent is not None:
            return frame_start(src.bent, strength, self.options.init, self.options.seed, self.recipe)
        return self.ref.crop + min(1.0, abs(strength)) * (src.composite - self.ref.crop)

    def run(self, strength: float, warm: tuple[float, np.ndarray] | None,
            progress: Callable[[Progress], None] | None,
            cancel: CancelToken | None) -> tuple[np.ndarray, np.ndarray, list]:
        """(start, result crop, loss history) at `strength`; `warm` = (previous strength, its result crop), of
        the same sign: the start then carries that optimisation's change forward (bent on to this strength's shape
        where the start is bent, FaceFrame.carried)."""
        init = self.start(strength)
        if warm is not None:
            change = warm[1] - self.start(warm[0])
            bent, before = self.source(strength).bent, self.source(warm[0]).bent
            if bent is not None and before is not None:
                change = bent.carried(change, before, warm[0], strength)
            init = np.clip(init + change, 0, 255).astype(np.float32)
        ref_f, attr_f = self.targets(strength)
        keep = self.source(strength).keep
        mask = self.source(strength).mask
        problem = Problem(self.bb, _tensor(init, self.dev), torch.from_numpy(mask).to(self.dev), ref_f, attr_f,
                          self.recipe, None if keep is None else torch.from_numpy(keep).to(self.dev))
        x, history = solve(problem, self.options.iterations, self.options.optimizer, self.options.seed, progress,
                           cancel)
        return init, x[0].detach().cpu().numpy().transpose(1, 2, 0), history

    def frame(self, strength: float) -> tuple[FaceFrame, Photo]:
        """The face frame (the example stands in for the guide, for the debug pictures; the reference itself where
        nothing is pasted)."""
        src = self.source(strength) if strength else self._own_source()
        shown = from_array(src.crop, "bank example" if len(src.used) else "reference, bent to the examples' shape"
                           if src.bent is not None else "reference (nothing pasted)")
        if src.bent is not None:
            return src.bent, shown
        return FaceFrame(self.ref, self._as_guide(src.crop, src.marks), src.mask, src.keep, self.user_mask,
                         src.own), shown

    def _as_guide(self, crop: np.ndarray, marks: np.ndarray) -> AlignedFace:
        """An example's crop at the work size as the frame's guide (already in the reference's crop frame)."""
        h, w = self.ref.size
        return AlignedFace(Face((0.0, 0.0, float(w), float(h)), marks), np.array([[1.0, 0, 0], [0, 1.0, 0]]), crop,
                           marks, self.ref.factor)

    def record(self, strength: float) -> dict:
        c = self.choice
        used = self.source(strength).used if strength else []
        return {"attribute": self.options.attribute, "region_used": self.region,
                "bank": str(self.bank.path) if self.bank.path else None, "bank_faces": len(self.bank),
                "examples": {"with": _examples(self.bank, c.with_idx, c.with_dist),
                             "without": _examples(self.bank, c.without_idx, c.without_dist),
                             "pixels_from": [self.bank.entries[i]["file"] for i in used]}}


def check_attribute_request(options: EditOptions, guide) -> None:
    if guide is not None:
        raise FATError(f"give either a guide photo ({arg_ref('guide')}) or an attribute ({option_ref('attribute')}), "
                       "not both.", EXIT_USAGE)
