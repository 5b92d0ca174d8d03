"""Attribute banks (mode B: no guide photo): file format, labels, k nearest, refusals, attribute edits."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.bank.choose import nearest
from engine.bank.labels import read_labels
from engine.bank.store import empty_bank, load_bank, save_bank
from engine.errors import EXIT_BACKBONE, EXIT_INPUT, EXIT_USAGE, FATError
from engine.frontends.cli import main as cli_main
from engine.options import EditOptions
from tests.conftest import EXAMPLES, load_module

PHOTOS = ("biden_1.jpg", "biden_2.jpg", "obama_1.jpg", "eileen_collins_astronaut.png")
# smiling / mouth_open as labelled here (not necessarily true: the tests need both sides)
LABELS = "file,person,smiling,mouth_open\nbiden_1.png,biden,0,0\nbiden_2.png,biden,1,1\nobama_1.png,obama,1,1\n" \
         "eileen_collins_astronaut.png,eileen,0,0\n"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The examples at <= 600 px (biden_1 cropped to its face): quick to detect, still real photos."""
    d = tmp_path_factory.mktemp("bankphotos")
    for name in PHOTOS:
        im = Image.open(EXAMPLES / name).convert("RGB")
        if name == "biden_1.jpg":
            im = im.crop((250, 150, 750, 650))
        im.thumbnail((600, 600))
        im.save(d / name.replace(".jpg", ".png"))
    (d / "labels.csv").write_text(LABELS)
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def bank_file(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("bank") / "bank.npz"
    files = [str(photos / n.replace(".jpg", ".png")) for n in PHOTOS]
    assert cli_main(["bank", "build", *files, "-o", str(out), "--labels", str(photos / "labels.csv"),
                     "--backbone", "dlib-resnet", "--quiet"]) == 0
    return out


def test_bank_round_trip_loads_without_pickle(bank_file, tmp_path):
    bank = load_bank(bank_file)
    assert len(bank) == 4 and bank.meta["backbone"] == "dlib-resnet" and len(bank.meta["onnx_sha256"]) == 64
    assert [e["name"] for e in bank.entries] == [n.replace(".jpg", ".png") for n in PHOTOS]
    assert bank.entries[0]["label_sources"] == {"smiling": "labels", "mouth_open": "labels",
                                               "eyes_closed": "measured", "brows_raised": "measured"}
    assert list(bank.labels_of("smiling")) == [0, 1, 1, 0] and bank.entries[1]["person"] == "biden"
    assert bank.crops.dtype == np.uint8 and bank.crops.shape[1:] == (300, 300, 3)
    assert set(bank.features) == {"pool1", "b35_3", "b17_3", "descriptor"}
    copy = tmp_path / "copy.npz"
    save_bank(bank, copy)
    again = load_bank(copy)
    assert again.meta == bank.meta
    for k in ("crops", "landmarks", "pose", "scores", "labels"):
        np.testing.assert_array_equal(getattr(again, k), getattr(bank, k))
    with np.load(copy, allow_pickle=False) as z:  # a plain npz: every array loads without pickle
        assert {"meta", "crops", "feat_descriptor"} <= set(z.files) and all(z[k] is not None for k in z.files)


def test_incremental_add_processes_only_new_photos(photos, tmp_path, capsys):
    out = tmp_path / "b.npz"
    a, b, c = (str(photos / n) for n in ("biden_2.png", "obama_1.png", "eileen_collins_astronaut.png"))
    assert cli_main(["bank", "build", a, b, "-o", str(out), "--quiet"]) == 0
    first = load_bank(out)
    assert cli_main(["bank", "build", a, b, c, str(photos / "notes.txt"), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 added from 1 new photo(s), 2 already in the bank, 1 skipped" in text and "notes.txt" in text
    skipped = next(line for line in text.splitlines() if "notes.txt" in line)
    assert skipped.count("notes.txt") == 1, skipped  # named once, not again inside the reason
    second = load_bank(out)
    assert len(second) == 3 and second.entries[:2] == first.entries
    np.testing.assert_array_equal(second.crops[:2], first.crops)


def test_labels_from_a_faces_csv_and_from_celeba(tmp_path):
    csv_file = tmp_path / "faces.csv"
    csv_file.write_text("file,person,identity_group,smiling,mouth_open,eyeglasses\n"
                        "a/x.jpg,X,x1,1,0,1\ny.png,Y,,0,,0\n")
    assert read_labels(csv_file) == {"x.jpg": {"smiling": 1, "mouth_open": 0, "person": "x1"},
                                     "y.png": {"smiling": 0, "person": "Y"}}
    celeba = tmp_path / "list_attr_celeba.txt"
    celeba.write_text("2\n5_o_Clock_Shadow Mouth_Slightly_Open Smiling Young\n"
                      "000001.jpg -1  1 1 1\n000002.jpg  1 -1 -1 1\n")
    assert read_labels(celeba) == {"000001.jpg": {"mouth_open": 1, "smiling": 1},
                                   "000002.jpg": {"mouth_open": 0, "smiling": 0}}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,smiling\nx.jpg,yes\n")
    with pytest.raises(FATError, match="expected 0 or 1") as e:
        read_labels(bad)
    assert e.value.exit_code == EXIT_INPUT


def synthetic_bank(n: int = 8):
    bank = empty_bank("dlib-resnet", "0" * 64, {"kind": "dlib_chip", "size": [4, 4]}, {"descriptor": [2]},
                      ["smiling", "mouth_open"])
    bank.crops = np.zeros((n, 8, 8, 3), np.uint8)
    bank.landmarks = np.zeros((n, 68, 2), np.float32)
    bank.pose = np.zeros((n, 3), np.float32)
    bank.scores = np.zeros((n, 5), np.float32)
    bank.labels = np.array([[i % 2, -1] for i in range(n)], np.int8)  # smiling: odd faces
    bank.features = {"descriptor": np.array([[i, 0] for i in range(n)], np.float16)}
    bank.meta["entries"] = [{"file": f"f{i}.png", "name": f"f{i}.png", "sha256": str(i), "face": 0,
                             "person": "p" if i == 7 else None} for i in range(n)]
    return bank


def test_k_nearest_on_synthetic_features():
    bank = synthetic_bank()
    ref = np.array([2.2, 0], np.float32)
    c = nearest(bank, "smiling", ref, np.zeros(3), 2, "descriptor")
    assert list(c.with_idx) == [3, 1] and list(c.without_idx) == [2, 4]
    np.testing.assert_allclose(c.with_dist, [0.8, 1.2], atol=1e-3)
    # pose counts: face 1 turned away drops behind face 5
    bank.pose[1] = [2.0, 0, 0]
    assert list(nearest(bank, "smiling", ref, np.zeros(3), 2, "descriptor").with_idx) == [3, 5]
    # the same person first, whatever the distance (by label, or by identity distance under the threshold)
    by_person = nearest(bank, "smiling", ref, np.zeros(3), 2, "descriptor", person="p")
    assert list(by_person.with_idx) == [7, 3] and list(by_person.with_same) == [True, False]
    assert not by_person.without_same.any()
    bank.pose[2] = [3.0, 0, 0]  # face 2 is near in identity (0.2) but turned away
    assert list(nearest(bank, "smiling", ref, np.zeros(3), 1, "descriptor").without_idx) == [4]
    assert list(nearest(bank, "smiling", ref, np.zeros(3), 1, "descriptor", same_person=0.5).without_idx) == [2]
    own = np.zeros(len(bank), bool)
    own[3] = True
    assert list(nearest(bank, "smiling", ref, np.zeros(3), 2, "descriptor", exclude=own).with_idx) == [5, 1]


def test_too_few_examples_and_missing_labels_are_refused():
    bank = synthetic_bank()
    with pytest.raises(FATError, match="fewer than --k 5") as e:
        nearest(bank, "smiling", np.zeros(2), np.zeros(3), 5, "descriptor")
    assert e.value.exit_code == EXIT_USAGE
    bank.labels[:, 0] = 0  # nobody smiles: "lower --k" cannot help, more photos can
    with pytest.raises(FATError, match="has no face with 'smiling': add photos of faces that show it") as e:
        nearest(bank, "smiling", np.zeros(2), np.zeros(3), None, "descriptor")
    assert e.value.exit_code == EXIT_USAGE and "--k" not in str(e.value)
    bank.labels[:, 0] = 1
    with pytest.raises(FATError, match="no face without 'smiling': add photos of faces that do not show it"):
        nearest(bank, "smiling", np.zeros(2), np.zeros(3), None, "descriptor")
    bank.labels[:, 0] = [i % 2 for i in range(len(bank))]
    with pytest.raises(FATError, match="no labels for 'mouth_open'") as e:
        nearest(bank, "mouth_open", np.zeros(2), np.zeros(3), 1, "descriptor")
    assert e.value.exit_code == EXIT_USAGE


def test_strength_range_depends_on_the_mode():
    assert EditOptions(attribute="smiling", strength=-2).validate().strength == -2
    with pytest.raises(FATError, match="need --attribute") as e:
        EditOptions(strength=-0.5).validate()
    assert e.value.exit_code == EXIT_USAGE
    with pytest.raises(FATError, match="between"):
        EditOptions(attribute="smiling", strength=-2.5).validate()


def edit_argv(photos, bank, out, *extra):
    return ["edit", str(photos / "biden_1.png"), "--attribute", "smiling", "--bank", str(bank), "--k", "1",
            "-o", str(out), "--quiet", "--iterations", "2", *extra]


@pytest.fixture()
def altered(bank_file, tmp_path):
    """A copy of the bank with one meta value or array changed."""
    def make(**meta):
        bank = load_bank(bank_file)
        if "labels" in meta:
            bank.labels[:, bank.attributes.index(meta.pop("labels"))] = -1
        bank.meta.update(meta)
        path = tmp_path / "altered.npz"
        save_bank(bank, path)
        return path
    return make


@pytest.mark.parametrize("change, code, text", [
    ({"backbone": "vggface"}, EXIT_BACKBONE, "built with backbone 'vggface'"),
    ({"onnx_sha256": "f" * 64}, EXIT_BACKBONE, "another export"),
    ({"labels": "smiling"}, EXIT_USAGE, "no labels for 'smiling'"),
])
def test_a_mismatched_bank_is_refused(altered, photos, tmp_path, capsys, change, code, text):
    out = tmp_path / "o.png"
    assert cli_main(edit_argv(photos, altered(**change), out)) == code
    assert text in capsys.readouterr().err and not out.exists()


def test_no_strengths_is_refused(bank_file, photos, dlib_backbone):
    from engine.api import edit_strengths

    with pytest.raises(FATError, match="at least one strength") as e:
        edit_strengths(str(photos / "biden_1.png"), [], attribute="smiling", bank=bank_file, backbone=dlib_backbone)
    assert e.value.exit_code == EXIT_USAGE


def test_too_few_examples_on_one_side_exit_2(bank_file, photos, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert cli_main(edit_argv(photos, bank_file, out, "--k", "3")) == EXIT_USAGE
    assert "fewer than --k 3" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-meta", "missing"])
def test_a_damaged_bank_is_refused(bank_file, photos, tmp_path, capsys, damage):
    bad = tmp_path / "bad.npz"
    if damage == "garbage":
        bad.write_bytes(b"PK\x03\x04 not really a zip")
    elif damage == "truncated":
        data = bank_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "no-meta":
        np.savez(bad, crops=np.zeros((1, 2, 2, 3), np.uint8))
    out = tmp_path / "o.png"
    assert cli_main(edit_argv(photos, bad, out)) == EXIT_INPUT
    err = capsys.readouterr().err
    assert ("damaged" in err or "no such file" in err) and "Traceback" not in err and not out.exists()


def test_building_onto_a_damaged_bank_says_to_move_it_away_and_keeps_it(photos, tmp_path, capsys):
    """A build adds to the bank it is given, so "rebuild it" with the same -o failed the same way (CLI trial)."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert cli_main(["bank", "build", str(photos / "biden_2.png"), "-o", str(bad), "--quiet"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "damaged" in err and "move it away" in err and f"-o {bad}" in err
    assert bad.read_bytes() == b"PK\x03\x04 not really a zip"


def test_a_missing_bank_is_refused_before_the_face_search(photos, tmp_path, capsys, monkeypatch):
    """A mistyped --bank was reported only after the face search and the network's load (~1.5 s)."""
    import engine.frontends.cli as cli

    def searched(*_a, **_k):
        raise AssertionError("the face search started before the bank was checked")

    monkeypatch.setattr(cli, "face_search", searched)
    out = tmp_path / "o.png"
    assert cli_main(edit_argv(photos, tmp_path / "no-such-bank.npz", out)) == EXIT_INPUT
    assert "no such file" in capsys.readouterr().err and not out.exists()


def test_strength_0_returns_the_photo_byte_identical(bank_file, photos, tmp_path):
    out = tmp_path / "same.png"
    assert cli_main(edit_argv(photos, bank_file, out, "--strength", "0")) == 0
    assert out.read_bytes() == (photos / "biden_1.png").read_bytes()
    side = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert side["strength"] == 0 and side["examples"]["pixels_from"] == []


@pytest.mark.parametrize("kind", ["L", "RGB"])
def test_a_black_and_white_photo_stays_black_and_white(bank_file, photos, tmp_path, kind):
    """The bank's examples are in colour: laid into a B&W portrait they tinted its lips pink and its teeth blue (a
    user trial). A gray file comes back gray; a B&W photo saved as RGB comes back with R = G = B, and the pixels
    the edit left alone are unchanged."""
    ref = tmp_path / f"bw-{kind}.png"
    Image.open(photos / "biden_1.png").convert("L").convert(kind).save(ref)
    out = tmp_path / f"out-{kind}.png"
    argv = edit_argv(photos, bank_file, out)
    argv[1] = str(ref)
    assert cli_main(argv) == 0
    result, before = Image.open(out), np.asarray(Image.open(ref), np.int16)
    assert result.mode == kind
    after = np.asarray(result, np.int16)
    if kind == "RGB":
        assert (after.max(-1) == after.min(-1)).all()
        after, before = after[..., 0], before[..., 0]
    changed = after != before
    assert changed.sum() > 100  # it did edit
    assert np.array_equal(after[~changed], before[~changed])


def test_a_negative_first_strength_is_read_as_typed():
    """`--strength -1,0.5` (as a user types the README's several-strengths edit) is read as `--strength=-1,0.5`;
    argparse alone refused it as an unknown flag ("expected one argument"). Other values are left alone."""
    from engine.frontends.cli import joined_number_lists, parser

    args = parser().parse_args(["edit", "r.jpg", "-o", "o.png", "--attribute", "smiling", "--strength", "-1,0.5"])
    assert args.strength == (-1.0, 0.5)
    assert parser().parse_args(["edit", "r.jpg", "-o", "o.png", "--strength", "-.5"]).strength == (-0.5,)
    assert joined_number_lists(["--strength", "-1,-0.5,.5", "-o", "x"]) == ["--strength=-1,-0.5,.5", "-o", "x"]
    assert joined_number_lists(["--strength", "-o", "x"]) == ["--strength", "-o", "x"]  # still refused, as before
    assert joined_number_lists(["--seed", "-1,2"]) == ["--seed", "-1,2"]


def test_several_strengths_write_several_files(bank_file, photos, tmp_path):
    out = tmp_path / "s.png"
    assert cli_main(edit_argv(photos, bank_file, out, "--strength=-1,0.5,1")) == 0
    names = sorted(p.name for p in tmp_path.glob("s-*.png"))
    assert names == ["s-s-1.png", "s-s0.5.png", "s-s1.png"]
    side = [json.loads((tmp_path / n).with_suffix(".json").read_text())["settings"] for n in ("s-s0.5.png", "s-s1.png")]
    assert side[0]["warm_start_from"] is None and side[1]["warm_start_from"] == 0.5
    ex = side[1]["examples"]
    assert ex["with"][0]["file"].endswith(".png") and len(ex["with"][0]["sha256"]) == 64
    assert ex["pixels_from"] == [ex["with"][0]["file"]] and "distance" in ex["without"][0]
    # the reference's own photo is never its own example
    assert all("biden_1" not in e["file"] for e in ex["with"] + ex["without"])
    ref = np.asarray(Image.open(photos / "biden_1.png"), np.int16)
    assert np.abs(np.asarray(Image.open(tmp_path / "s-s1.png"), np.int16) - ref).max() > 0


@pytest.mark.parametrize("kind", ["RGB", "L"])
def test_the_reference_given_as_pixels_is_not_its_own_example_either(bank_file, photos, dlib_backbone, kind):
    """GIMP sends a layer's pixels, never the file, so the hash cannot match: a GIMP edit of a photo in the bank
    took that photo as its own example (found in a real GIMP window). Here the pixels come re-encoded as JPEG, in
    colour or as a black-and-white copy (GIMP's Image > Mode > Grayscale of a bank photo took it as its example)."""
    import io

    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor

    buf = io.BytesIO()
    Image.open(photos / "biden_1.png").convert(kind).save(buf, "JPEG", quality=85)
    pixels = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    bank = load_bank(bank_file)
    options = EditOptions(attribute="smiling", k=1)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, pixels, None, lambda _m: None)
    chosen = [bank.entries[i]["name"] for i in (*editor.choice.with_idx, *editor.choice.without_idx)]
    assert "biden_1.png" not in chosen and "eileen_collins_astronaut.png" in chosen  # another photo instead


def test_the_api_takes_an_attribute_and_a_loaded_bank(bank_file, photos):
    from engine import edit

    bank = load_bank(bank_file)
    result = edit(str(photos / "eileen_collins_astronaut.png"), attribute="mouth_open", bank=bank, k=1,
                  iterations=2, strength=0.5)
    assert result.settings["attribute"] == "mouth_open" and result.settings["region_used"] == "mouth"
    assert result.settings["examples"]["with"][0]["file"].endswith(("biden_2.png", "obama_1.png"))
    with pytest.raises(FATError, match="not both"):
        edit(str(photos / "biden_1.png"), guide=str(photos / "obama_1.png"), attribute="smiling", bank=bank)


def test_the_pixel_source_is_a_reliable_typical_example():
    from dataclasses import replace

    from engine.bank.edit import typical_first
    from engine.objective.recipes import DLIB_RESNET

    bank = synthetic_bank()
    bank.scores[:, 1] = 1.0  # mouth width 1.0 x eye distance: measured smiling...
    bank.scores[1, 1] = 0.8  # ...except face 1, labelled smiling: its landmarks disagree
    bank.features["descriptor"][5] = [50, 0]  # face 5: an odd one out among the four
    recipe = replace(DLIB_RESNET, attribute_layers={"descriptor": 1.0})
    assert list(typical_first(bank, np.array([1, 3, 5, 7]), 1, "smiling", recipe)) == [3, 7, 5, 1]


def test_an_open_mouth_takes_only_the_examples_lips_as_pixels(bank_file, photos, dlib_backbone):
    """As for a guide photo: the example's lips and teeth start the edit; over the rest of the mouth region (its
    moustache, chin, philtrum) the reference's own skin stays, with only the example's folds laid over it. Unbent
    (--warp none; by default the mouth bends to the example's opening: test_a_mouth_takes_the_examples_shape)."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor
    from engine.face.masks import region_mask

    options = EditOptions(attribute="mouth_open", k=1, warp="none")
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, load_bank(bank_file),
                             str(photos / "eileen_collins_astronaut.png"), None, lambda _m: None)
    src = editor.source(1.0)
    example, marks, start, mask = src.crop, src.marks, src.composite, src.mask
    lips = region_mask(marks, "lips", editor.ref.size)
    inside = lips > 0.95
    rest = (mask > 0.8) & (lips < 0.05)
    assert inside.sum() > 200 and rest.sum() > 100

    def closer_to_example(where):
        return np.abs(start - example)[where].mean() < np.abs(start - editor.ref.crop)[where].mean()

    assert closer_to_example(inside) and not closer_to_example(rest)
    # nothing is bent to the example's shape here, so its pixels also cover the reference's own lips (a squint
    # pasted over an open eye left the iris above it showing; a closing mouth would show its teeth)
    own_lips = region_mask(editor.ref.landmarks, "lips", editor.ref.size) * mask
    assert (src.own >= own_lips - 1e-6).all() and (src.own >= lips * mask - 1e-6).all()


def test_an_opening_takes_the_widest_open_of_the_three_nearest():
    """mouth_open's `strongest_of` = 3: of the three nearest reliable examples the widest-open mouth gives the
    pixels (a closing takes the most closed); the rest keep their order. A smile is added from the toothier of the
    two nearest and taken away with the nearest."""
    from engine.bank.edit import strongest_first

    bank = synthetic_bank()
    bank.scores[:, 0] = [0.10, 0.30, 0.12, 0.20, 0.50, 0.11, 0.02, 0.04]  # mouth_open measure per face
    nearest_first = np.array([0, 2, 3, 4, 1])
    assert list(strongest_first(bank, nearest_first, 1, "mouth_open", reliable=5)) == [3, 2, 0, 4, 1]
    assert list(strongest_first(bank, np.array([7, 6, 5]), 0, "mouth_open", reliable=3)) == [6, 7, 5]
    # a smile to add: the toothier (inner-lip gap) of the two nearest; one to take away: the nearest
    assert list(strongest_first(bank, nearest_first, 1, "smiling", reliable=5)) == [2, 0, 3, 4, 1]
    assert list(strongest_first(bank, nearest_first, 0, "smiling", reliable=5)) == list(nearest_first)
    # only two lead as reliable (landmarks agree, typical): the third, however wide open, stays behind them
    assert list(strongest_first(bank, np.array([0, 2, 4]), 1, "mouth_open", reliable=2)) == [2, 0, 4]


def test_a_shade_above_the_lip_is_measured_against_the_cheeks(bank_file):
    """engine/bank/shade.py on the real aligned crops of the examples: shaven faces read near the cheeks' own
    luma; painting a moustache (the band between nose and upper lip at 40 % of its luma) makes the same face
    read far darker: hair, "shaded" against its clean self but not the other way round."""
    from engine.bank.shade import BAND, SHADE_MARGIN, lip_shade, shaded

    bank = load_bank(bank_file)
    factor = bank.meta["crop_factor"]
    crop, marks = bank.crops[0].astype(np.float32), bank.landmarks[0] * factor
    clean = lip_shade(crop, marks)
    assert 0.6 < clean < 1.3
    band = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(band, [np.round(marks[list(BAND)]).astype(np.int32)], 1)
    moustache = crop.copy()
    moustache[band > 0] *= 0.4
    dark = lip_shade(moustache, marks)
    assert dark < clean - SHADE_MARGIN and dark == pytest.approx(0.4 * clean, rel=0.05)
    assert list(shaded(np.array([dark, clean, np.nan]), clean)) == [True, False, False]
    assert not shaded(np.array([clean]), dark)[0]  # a clean example is never counted against a bearded face
    # a nose shadow's reading (above HAIR_LINE) is not hair, however much lighter the reference's lip is; a beard's
    # is, against a shaven face, but not against another beard
    assert list(shaded(np.array([0.8, 0.65]), 1.1)) == [False, True]
    assert not shaded(np.array([0.65]), 0.7)[0]
    assert np.isnan(lip_shade(crop, np.zeros((68, 2))))  # degenerate landmarks: no reading
    # the region decides whether the lip matters at all: a smile's covers it, the eyes' do not
    from engine.bank.shade import lip_in
    from engine.face.masks import region_mask

    assert lip_in(region_mask(marks, "smile_area", crop.shape[:2]), marks)
    assert not lip_in(region_mask(marks, "eyes", crop.shape[:2]), marks)


def test_a_bent_smile_or_mouth_still_checks_the_examples_upper_lip(bank_file, photos, dlib_backbone):
    """A smile or mouth bent to the example's shape has a mask that stops at the lips, but the example's lips and
    folds still reach the skin above them: the moustache check (AttributeEditor._hairy) reads the reach of the
    region's unbent part (a goatee's shadow came along on ../shared/faces/obama_2.jpg's smile while it looked
    at the bent mask). Regions away from the lip (eyes) still skip it."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor
    from engine.bank.shade import lip_in
    from engine.face.masks import region_mask

    bank = load_bank(bank_file)
    reference = str(photos / "eileen_collins_astronaut.png")
    for attribute, covered in (("smiling", True), ("mouth_open", True), ("eyes_closed", False)):
        options = EditOptions(attribute=attribute, k=1)
        spec, recipe = backbone_recipe(options, dlib_backbone)
        editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, reference, None, lambda _m: None)
        assert editor.bends and lip_in(editor.reachable, editor.ref.landmarks) == covered, attribute
        unbent = {"smiling": "smile_area", "mouth_open": "mouth_area", "eyes_closed": "eyes"}[attribute]
        assert np.array_equal(editor.reachable, region_mask(editor.ref.landmarks, unbent, editor.ref.size))


def test_an_example_darker_above_the_lip_gives_no_pixels_while_a_clean_one_is_chosen_or_own_photo_leads():
    from dataclasses import replace

    from engine.bank.edit import typical_first
    from engine.objective.recipes import DLIB_RESNET

    bank = synthetic_bank()
    bank.scores[:, 1] = 1.0  # all measured smiling
    bank.features["descriptor"][:] = [1, 0]  # no odd one out
    recipe = replace(DLIB_RESNET, attribute_layers={"descriptor": 1.0})
    nearest_first = np.array([3, 1, 5, 7])
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe)) == [3, 1, 5, 7]
    moustache = np.array([True, False, False, False])  # the nearest is shaded: it goes behind the clean ones
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe, moustache)) == [1, 5, 7, 3]
    bank.scores[5, 0] = 0.2  # face 5 shows teeth: the toothier of the two leading clean ones adds the smile
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe, moustache)) == [5, 1, 7, 3]
    # the reference's own person's photo (face 7) leads, moustache or not, and no stranger's teeth displace it:
    # face 1, right behind it, shows more teeth than it does
    own = np.array([False, False, False, True])
    bank.scores[1, 0] = 0.3
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe, moustache, own)) == [7, 1, 5, 3]
    own_shaded = np.array([True, False, False, False])
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe, own_shaded, own_shaded)) == [3, 1, 5, 7]
    # an example that shows the smile no more clearly than the reference (not usable) goes last and is not one of
    # the two compared: here the own person's photo, so the strangers' toothier one leads
    usable = np.array([True, True, True, False])
    assert list(typical_first(bank, nearest_first, 1, "smiling", recipe, None, own, usable)) == [1, 3, 5, 7]
    # taking a smile away from a closed mouth: an example whose lips part more than the reference's goes behind the
    # closed ones, the own person's photo too (engine/bank/edit.py _parted)
    parted = np.array([True, False, False, True])
    assert list(typical_first(bank, nearest_first, 0, "smiling", recipe, None, own, None, parted)) == [1, 5, 7, 3]


def test_the_opening_pixel_source_is_the_widest_of_the_three_nearest_reliable():
    from dataclasses import replace

    from engine.bank.edit import typical_first
    from engine.objective.recipes import DLIB_RESNET

    bank = synthetic_bank()
    bank.labels[:, 1] = 1  # all labelled open...
    bank.scores[:, 0] = [0.12, 0.30, 0.02, 0.20, 0.50, 0.15, 0.11, 0.13]  # ...face 2 measures closed: unreliable
    bank.features["descriptor"][:] = [[i % 3, 0] for i in range(8)]  # no odd one out
    recipe = replace(DLIB_RESNET, attribute_layers={"descriptor": 1.0})
    # nearest first 2, 0, 3, 1, 4: face 2 drops to the back; 0, 3, 1 are taken widest open first
    assert list(typical_first(bank, np.array([2, 0, 3, 1, 4]), 1, "mouth_open", recipe)) == [1, 3, 0, 4, 2]


def test_only_examples_showing_it_more_clearly_than_the_reference_give_pixels(bank_file, photos, dlib_backbone,
                                                                            monkeypatch):
    """Smiling +1 on a broad smile took a closed half-smile's pixels and made the face smile less: an example gives
    the pixels only if it shows the side's value more clearly than the reference (a wider smile to add, a narrower
    one to remove). When none does, the reference's own pixels start the edit and none is pasted."""
    from engine.api import backbone_recipe
    from engine.bank import edit as bank_edit
    from engine.bank.edit import AttributeEditor, clearer_than

    bank = synthetic_bank()
    bank.scores[:, 1] = [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # mouth width x eye distance
    assert list(clearer_than(bank, np.array([1, 3, 5, 7]), 1, "smiling", own=1.15)) == [False, False, True, True]
    assert list(clearer_than(bank, np.array([0, 2, 4]), 0, "smiling", own=1.15)) == [True, True, False]
    bank.scores[:, 3] = [0.10, 0.15, 0.25, 0.30, 0.35, 0.12, 0.40, 0.18]  # eye aspect ratio: low = closed
    assert list(clearer_than(bank, np.array([0, 1, 2]), 1, "eyes_closed", own=0.2)) == [True, True, False]
    assert list(clearer_than(bank, np.array([3, 5, 6]), 0, "eyes_closed", own=0.2)) == [True, False, True]

    options = EditOptions(attribute="smiling", k=1)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    real = load_bank(bank_file)
    measured = bank_edit.scores

    def reference_scores(width):
        return lambda landmarks: {**measured(landmarks), "mouth_width": width}

    monkeypatch.setattr(bank_edit, "scores", reference_scores(0.0))  # hardly a mouth: every example smiles more
    logged = []
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, real, str(photos / "biden_1.png"), None,
                             logged.append)
    assert len(editor.source(1.0).used) == 1 and editor.note(1.0) is None
    assert "too little of it to take away" in editor.note(-1.0)  # no example smiles less: nothing to remove
    monkeypatch.setattr(bank_edit, "scores", reference_scores(10.0))  # wider than any mouth in the bank
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, real, str(photos / "biden_1.png"), None,
                             logged.append)
    src = editor.source(1.0)
    assert len(src.used) == 0 and src.own is None and np.array_equal(src.composite, editor.ref.crop)
    assert src.keep is not None and src.keep.max() > 0.5  # the reference's own mouth still costs more to change
    from engine.face.masks import region_mask

    # nothing bends or is pasted: the smile's whole unbent area (mouth, cheeks, folds), not its bent mouth-only mask
    assert editor.bends and src.bent is None
    assert np.array_equal(src.mask, region_mask(editor.ref.landmarks, "smile_area", editor.ref.size))
    assert "more clearly than every chosen example" in logged[-1]
    assert "already shows it" in editor.note(1.0)  # told to the user (CLI "note:", the plug-in's message)
    assert editor.record(1.0)["examples"]["pixels_from"] == []
    said = len(logged)
    _frame, shown = editor.frame(0.0)  # strength 0 builds no source and says nothing about examples
    assert len(logged) == said and False not in editor._examples and shown.rgb.shape[:2] == editor.ref.size


def test_a_bank_edit_bends_as_a_guide_edit_does(bank_file, photos, dlib_backbone):
    """A region whose shape is the attribute (mouth, smile, eyes, brows) bends to a bank example's shape as to a
    guide's, over the region itself; with --warp none / similarity nothing bends and the region's unbent area stands
    for it (engine/face/regions.py Region.unbent): the smile its mouth, cheeks and nasolabial folds, the mouth its
    mouth area; a region without one is used as it is."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor
    from engine.face.masks import region_mask
    from engine.face.regions import PARTS, REGIONS

    assert REGIONS["smile"].unbent in PARTS
    for attribute, region, warp, used, bends in (("smiling", "smile", "auto", "smile", True),
                                                 ("smiling", "smile", "none", "smile_area", False),
                                                 ("mouth_open", "smile", "similarity", "smile_area", False),
                                                 ("smiling", "mouth", "tps", "mouth", True),
                                                 ("smiling", "mouth", "none", "mouth_area", False),
                                                 ("smiling", "eyes", "auto", "eyes", True),
                                                 ("smiling", "nose", "auto", "nose", False)):
        options = EditOptions(attribute=attribute, k=1, region=region, warp=warp)
        spec, recipe = backbone_recipe(options, dlib_backbone)
        editor = AttributeEditor(dlib_backbone, spec, recipe, options, load_bank(bank_file),
                                 str(photos / "eileen_collins_astronaut.png"), None, lambda _m: None)
        assert np.array_equal(editor.mask, region_mask(editor.ref.landmarks, used, editor.ref.size))
        assert editor.bends == bends


def test_a_removal_with_nothing_to_remove_says_so(bank_file, photos, tmp_path, capsys, monkeypatch):
    """Smiling -1 on a face that shows no smile leaves it nearly as it was (the GIMP trial: 'a user may think nothing
    happened'): the CLI prints a note, the sidecar records it and the plug-in's bridge passes it on (done event),
    which the plug-in shows as a message."""
    from engine.bank import edit as bank_edit
    from engine.frontends.bridge import handle
    from engine.frontends.protocol import make_request, raw_image

    measured = bank_edit.scores
    monkeypatch.setattr(bank_edit, "scores", lambda landmarks: {**measured(landmarks), "mouth_width": 0.0})
    out = tmp_path / "o.png"
    argv = [a for a in edit_argv(photos, bank_file, out, "--strength", "-1") if a != "--quiet"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "note: Smiling: the face shows too little of it to take away" in printed
    note = next(line[len("note: "):] for line in printed.splitlines() if line.startswith("note: "))
    assert json.loads(out.with_suffix(".json").read_text())["notes"] == [note]

    rgba = np.asarray(Image.open(photos / "biden_1.png").convert("RGBA"))
    (tmp_path / "ref.raw").write_bytes(rgba.tobytes())
    request = make_request(raw_image(str(tmp_path / "ref.raw"), rgba.shape[1], rgba.shape[0], "RGBA8"), None,
                           str(tmp_path / "out.raw"), {"attribute": "smiling", "strength": -1, "k": 1,
                                                       "bank": str(bank_file), "iterations": 2})
    (tmp_path / "request.json").write_text(json.dumps(request))
    events = []
    assert handle(tmp_path / "request.json", events.append) == 0
    assert events[-1]["event"] == "done" and "too little of it" in events[-1]["notes"][0]


def test_a_bank_with_fewer_faces_than_an_edit_looks_for_says_so(bank_file, photos, tmp_path, capsys):
    """The test bank has 2 smiling and 2 non-smiling faces, fewer than the 5 an edit looks for: the CLI says the
    result follows those few (a GIMP user saw a squint from the default bank's one closed-eyes face and no reason
    why), in the sidecar too; a --k the user gives is their choice and brings no such note."""
    out = tmp_path / "few.png"
    argv = edit_argv(photos, bank_file, out, "--strength", "1")
    k = argv.index("--k")
    assert cli_main([a for a in argv[:k] + argv[k + 2:] if a != "--quiet"]) == 0  # no --k: as many as there are
    printed = capsys.readouterr().out
    assert "note: Smiling: the attribute bank has only 2 example faces with it (an edit looks for 5)" in printed
    sidecar = json.loads(out.with_suffix(".json").read_text())  # advice about the bank, not about this result
    assert sidecar["notes"] == [] and "only 2 example faces" in sidecar["advice"][0]
    assert cli_main([a for a in edit_argv(photos, bank_file, out, "--strength", "1") if a != "--quiet"]) == 0
    assert "only" not in capsys.readouterr().out


def test_the_plugin_gives_a_banks_advice_once_and_a_results_note_every_time(bank_file, photos, tmp_path,
                                                                            monkeypatch):
    """A GIMP trial: the default bank's "only 4 example faces" message popped up after every run. The bridge sends
    it as advice, apart from the notes about the result; the plug-in (advice_memory.py, its memory kept in the last
    values) shows it on the first run only, while a result's note (nothing to take away) comes every time."""
    from engine.bank import edit as bank_edit
    from engine.frontends.bridge import handle
    from engine.frontends.protocol import make_request, raw_image

    plugin = EXAMPLES.parent / "plugin" / "face-attribute-transfer"
    memory_module = load_module("advice_memory", plugin / "advice_memory.py")
    measured = bank_edit.scores
    monkeypatch.setattr(bank_edit, "scores", lambda landmarks: {**measured(landmarks), "mouth_width": 0.0})
    rgba = np.asarray(Image.open(photos / "biden_1.png").convert("RGBA"))
    (tmp_path / "ref.raw").write_bytes(rgba.tobytes())
    memory, shown = "", []
    for strength in (-1, -1, 1):
        request = make_request(raw_image(str(tmp_path / "ref.raw"), rgba.shape[1], rgba.shape[0], "RGBA8"), None,
                               str(tmp_path / "out.raw"), {"attribute": "smiling", "strength": strength,
                                                           "bank": str(bank_file), "iterations": 1})
        (tmp_path / "request.json").write_text(json.dumps(request))
        events = []
        assert handle(tmp_path / "request.json", events.append) == 0
        done = events[-1]
        fresh, memory = memory_module.fresh_advice(done["advice"], memory)
        shown.append(done["notes"] + fresh)
    few_without, few_with = "without it (an edit looks for 5)", "with it (an edit looks for 5)"  # (its own photo:
    # never its own example)
    assert len(shown[0]) == 2 and "too little of it" in shown[0][0] and few_without in shown[0][1], shown[0]
    assert len(shown[1]) == 1 and "too little of it" in shown[1][0], shown[1]  # the note again, the advice not
    assert len(shown[2]) == 1 and few_with in shown[2][0], shown[2]  # other advice: said once too
    assert memory_module.fresh_advice(["a"], "not json") == (["a"], '["a"]')  # an unreadable memory: nothing said


def test_eyes_take_the_examples_shape_as_from_a_guide(bank_file, photos, dlib_backbone):
    """A region whose shape is the attribute (eyes) bends the reference to the example's shape, as a guide photo's
    edit does: without a bend, a squint pasted over an open eye left the reference's upper lashes showing above it
    (eyes_closed on ../shared/faces/jennifer_aniston_2.jpg). Start and paste bend alike; a strength is warm-started
    from the previous one's result, its change bent on to this strength's shape (FaceFrame.carried)."""
    from engine.api import backbone_recipe, edit_strengths
    from engine.bank.edit import AttributeEditor
    from engine.objective.composite import frame_start

    bank = load_bank(bank_file)
    options = EditOptions(attribute="eyes_closed", k=1, iterations=2)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    # eyes_closed measured: the squinting laugh counts (engine/bank/measure.py), both sides have a face here
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, str(photos / "eileen_collins_astronaut.png"),
                             None, lambda _m: None)
    src = editor.source(1.0)
    assert src.bent is not None and src.bent.reshape is not None and len(src.used) == 1
    # the user is told that the closed eyes are a measured squint (k given: nothing about the bank's size)
    (squint,) = editor.advice(1.0)
    assert "biden_2.png" in squint and "narrows the eyes" in squint and "eyes_closed column" in squint
    assert editor.advice(-1.0) == () and editor.advice(0.0) == ()
    labelled = load_bank(bank_file)
    labelled.entries[src.used[0]]["label_sources"]["eyes_closed"] = "labels"  # a labelled blink: nothing said
    assert AttributeEditor(dlib_backbone, spec, recipe, options, labelled, str(photos / "eileen_collins_astronaut.png"),
                           None, lambda _m: None).advice(1.0) == ()
    np.testing.assert_array_equal(editor.start(0.5), frame_start(src.bent, 0.5, "composite", 0, recipe))
    moved = np.abs(src.bent.bend(1.0)).max()
    assert moved > 1.0  # pixels: the lids go to the example's opening
    unbent = AttributeEditor(dlib_backbone, spec, recipe, EditOptions(attribute="eyes_closed", k=1, warp="none"),
                             bank, str(photos / "eileen_collins_astronaut.png"), None, lambda _m: None)
    assert unbent.source(1.0).bent is None  # --warp none: nothing bends, as with a guide
    results = edit_strengths(str(photos / "eileen_collins_astronaut.png"), [0.5, 1.0], attribute="eyes_closed",
                             bank=bank, k=1, iterations=2, backbone=dlib_backbone)
    assert [r.settings["warm_start_from"] for r in results] == [None, 0.5]
    warm = results[0]
    carried = src.bent.carried(warm.crops["result"] - editor.start(0.5), src.bent, 0.5, 1.0)
    np.testing.assert_allclose(results[1].crops["init"], np.clip(editor.start(1.0) + carried, 0, 255), atol=1e-3)
    half = results[0]  # pasted with the bend and own part of strength 0.5, as its start was made
    assert np.array_equal(half.image, half.frame.paste(half.photo.rgb, half.crops["result"], 0.5))
    assert not np.array_equal(half.image, half.frame.paste(half.photo.rgb, half.crops["result"], 1.0))
    for r in results:
        assert r.frame is not None and r.frame.reshape is not None
        changed = np.abs(r.image.astype(np.int16) - r.photo.rgb8().astype(np.int16)).max(axis=2) > 2
        assert changed.any() and not (changed & (r.frame.photo_mask(changed.shape) == 0)).any()


def test_a_mouth_and_a_smile_take_the_examples_shape(bank_file, photos, dlib_backbone):
    """mouth_open bends the reference's mouth to the example's opening at the reference's own corners, and smiling
    its mouth, cheeks and folds to the example's smile, as a guide photo's edit does (bench/bank_quality.py: identity
    kept in 21/22 opened mouths instead of 18/22, in 18/24 removed smiles instead of 14/24, the lips keeping the
    person's corners and colour), both to add (a "with" example) and to take away (a "without" one); the bend goes
    `strength` of the way."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor

    bank = load_bank(bank_file)
    reference = str(photos / "eileen_collins_astronaut.png")
    for attribute in ("mouth_open", "smiling"):
        options = EditOptions(attribute=attribute, k=1)
        spec, recipe = backbone_recipe(options, dlib_backbone)
        editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, reference, None, lambda _m: None)
        for strength in (1.0, -1.0):
            src = editor.source(strength)
            assert src.bent is not None and src.bent.reshape is not None and src.composite is None, (attribute,
                                                                                                    strength)
            whole, half = np.abs(src.bent.bend(1.0)).max(), np.abs(src.bent.bend(0.5)).max()
            assert whole > 1.0 and 0.3 * whole < half < 0.7 * whole


def test_a_smile_taken_from_a_closed_mouth_never_parts_its_lips(bank_file, dlib_backbone):
    """Taking a smile away from a closed mouth: the example whose lips are no more open than the reference's gives the
    pixels, though a parted one is nearer or clearer (a CLI user's neutral face at -1 took another face's parted lips,
    teeth showing); where every example is parted, the example is bent closed to the reference's own opening
    (tests/test_bank_shape.py)."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor
    from engine.bank.measure import scores

    bank = load_bank(bank_file)
    names = [e["name"] for e in bank.entries]
    options = EditOptions(attribute="smiling", k=2)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    reference = str(EXAMPLES / "obama_biden_group.jpg")  # its largest face: closed lips, 0.04 eye distances
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, reference, None, lambda _m: None)
    without = editor.choice.without_idx
    assert sorted(names[i] for i in without) == ["biden_1.png", "eileen_collins_astronaut.png"]  # eileen: open, 0.15
    assert [names[i] for i in without[editor._parted(without)]] == ["eileen_collins_astronaut.png"]
    removed = editor.source(-1.0)
    assert [names[i] for i in removed.used] == ["biden_1.png"]
    assert scores(removed.marks)["mouth_open"] <= scores(editor.ref.landmarks)["mouth_open"] + 1e-3


def test_a_smile_added_to_a_speaking_face_keeps_its_own_open_mouth(bank_file, dlib_backbone):
    """obama_2 is caught mid-speech, his mouth open wider than the bank's mean smile: his own mouth and teeth start
    the edit, bent to the mean smile's corners and kept as open as they are. An example's closed grin stretched to
    his opening gave long, denture-like teeth; bent shut, he lost his likeness (bench/bank_quality.py: mobileface
    0.704 -> 0.813, face-api happy 0.98)."""
    from engine.api import backbone_recipe
    from engine.bank.edit import AttributeEditor
    from engine.bank.measure import scores

    bank = load_bank(bank_file)
    options = EditOptions(attribute="smiling", k=2)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, str(EXAMPLES / "obama_2.jpg"), None,
                             lambda _m: None)
    add = editor.source(1.0)
    assert len(add.used) == 0 and editor.record(1.0)["examples"]["pixels_from"] == []
    assert editor.note(1.0) is None  # something was added: no "stays close to the photo" remark
    own, goal = editor.ref.landmarks, add.bent.guide.landmarks
    assert scores(goal)["mouth_open"] > 0.95 * scores(own)["mouth_open"] > 0.25
    assert (goal[[48, 54], 1] < own[[48, 54], 1] - 1).all()  # the corners rise
    # the pixels are his: above the eyes, where nothing bends, the source is his own photo (another face's differs
    # by tens)
    top = int(own[36:48, 1].min()) - 2
    assert np.abs(add.bent.guide.crop[:top] - editor.ref.crop[:top]).mean() < 1.0
    remove = editor.source(-1.0)
    assert len(remove.used) == 1  # taking a smile away still lays an example's closed lips


def test_an_added_smile_takes_the_mean_smile_and_keeps_the_lips_as_an_opening_does(bank_file, photos, dlib_backbone):
    """Adding a smile: the mouth bends to the mean shape of the chosen smiling examples (engine/bank/shape.py) taken
    whole, and the example's own pixels start the edit only inside the mouth's opening (its teeth), so the lips stay
    the person's; taking one away lays the example's closed lips (bench/bank_quality.py: identity kept in 14/15 added
    smiles, mean 0.829, against 13/15 and 0.802 with one example's shape and lips)."""
    from dataclasses import replace

    from engine.api import backbone_recipe
    from engine.bank.attributes import ATTRIBUTES
    from engine.bank.edit import AttributeEditor
    from engine.bank.shape import mean_shape
    from engine.face.masks import region_mask
    from engine.face.regions import REGIONS

    assert ATTRIBUTES["smiling"].adding_mean_shape and ATTRIBUTES["smiling"].adding_pixels == "inner_mouth"
    bank = load_bank(bank_file)
    options = EditOptions(attribute="smiling", k=2)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, str(EXAMPLES / "obama_biden_group.jpg"),
                             None, lambda _m: None)  # a closed mouth (a speaking one keeps its own: the next test)
    assert len(editor.choice.with_idx) == 2
    add, remove = editor.source(1.0), editor.source(-1.0)
    assert len(add.used) == 1 and len(remove.used) == 1
    shapes = [bank.landmarks[i] * editor.ref.factor for i in editor.choice.with_idx]
    mouth = list(range(48, 68))
    assert not REGIONS["smile"].placed_per_half and add.bent is not None  # a guide's own smile: one similarity
    per_half = replace(REGIONS["smile"], placed_per_half=True)  # the mean smile: each half of the face its own width
    placed = mean_shape(shapes, editor.ref.landmarks, per_half)[mouth]  # the mean smile, on the reference
    goal, own = add.bent.guide.landmarks[mouth], editor.ref.landmarks[mouth]
    # taken whole (shape_share 1), unless cut short where it would cross the jaw or fold (one share for all points)
    share = float(((goal - own) * (placed - own)).sum() / ((placed - own) ** 2).sum())
    assert 0.6 < share <= 1.01 and np.abs(goal - own - share * (placed - own)).max() < 0.5, share
    assert np.array_equal(add.own, region_mask(add.bent.guide.landmarks, "inner_mouth", editor.ref.size)
                          * add.bent.mask)
    assert np.array_equal(remove.own, region_mask(remove.bent.guide.landmarks, "lips", editor.ref.size)
                          * remove.bent.mask)
    # an opening mouth, too, keeps the person's own lips (bent to the example's opening) around the example's teeth
    # (bench/bank_quality.py: opened 14 of 17 instead of 13, identity as before); its own shape, not a mean one
    options = EditOptions(attribute="mouth_open", k=1)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, str(photos / "eileen_collins_astronaut.png"),
                             None, lambda _m: None)
    assert ATTRIBUTES["mouth_open"].adding_pixels == "inner_mouth" and not ATTRIBUTES["mouth_open"].adding_mean_shape
    for strength, part in ((1.0, "inner_mouth"), (-1.0, "lips")):
        src = editor.source(strength)
        assert np.array_equal(src.own, region_mask(src.bent.guide.landmarks, part, editor.ref.size) * src.bent.mask)


def test_a_strength_above_1_bends_further_than_the_examples_shape(bank_file, photos, dlib_backbone):
    """Above 1 the shape goes further than the example's (FaceFrame.reach): a frame of its own per such strength,
    the same direction of move made longer (cut short only where it would cross the jaw or fold), the start and
    paste at its full bend, warm-started from the strength before it across the two frames."""
    from engine.api import backbone_recipe, edit_strengths
    from engine.bank.edit import AttributeEditor

    bank = load_bank(bank_file)
    biden = str(photos / "biden_1.png")  # closed; its "with" example is his own laughing photo
    options = EditOptions(attribute="mouth_open", k=1, iterations=2)
    spec, recipe = backbone_recipe(options, dlib_backbone)
    editor = AttributeEditor(dlib_backbone, spec, recipe, options, bank, biden, None, lambda _m: None)
    one, more = editor.source(1.0).bent, editor.source(1.5).bent
    assert (one.reach, more.reach, editor.source(0.5).bent.reach) == (1.0, 1.5, 1.0)
    assert more.share(1.5) == 1.0 and more.share(0.75) == 0.5 and one.share(1.5) == 1.0
    move_one = one.bent_landmarks(1.0)[0] - editor.ref.landmarks
    move_more = more.bent_landmarks(1.0)[0] - editor.ref.landmarks
    ratio = float(np.linalg.norm(move_more) / np.linalg.norm(move_one))
    cosine = float((move_one * move_more).sum() / np.linalg.norm(move_one) / np.linalg.norm(move_more))
    assert 1.2 < ratio <= 1.5 + 1e-6 and cosine > 0.99, (ratio, cosine)
    results = edit_strengths(biden, [1.0, 1.5], attribute="mouth_open", bank=bank, k=1, iterations=2,
                             backbone=dlib_backbone)
    assert [r.frame.reach for r in results] == [1.0, 1.5]
    carried = more.carried(results[0].crops["result"] - editor.start(1.0), one, 1.0, 1.5)
    np.testing.assert_allclose(results[1].crops["init"], np.clip(editor.start(1.5) + carried, 0, 255), atol=1e-3)
    # more of the photo changes (the mouth opens wider, more teeth: looked at; dlib's inner-lip points sit on the
    # teeth's edges there, so its landmark opening is no measure of it)
    photo = results[0].photo.rgb8().astype(np.int16)
    changed = [int((np.abs(np.clip(r.image, 0, 255).astype(np.int16) - photo).max(axis=2) > 20).sum())
               for r in results]
    assert changed[1] > 1.1 * changed[0], changed
