"""The optimisation engine: losses, determinism, cancel, API and CLI end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from engine import edit
from engine.errors import EXIT_CANCELLED, EXIT_INPUT, EXIT_NO_FACE, EXIT_USAGE, FATError
from engine.frontends.cli import main as cli_main
from engine.objective.losses import (
    MaskedTarget,
    attribute_loss,
    attribute_target,
    colour_anchor,
    feature_distance,
    gram_loss,
    identity_loss,
    total_variation,
)
from engine.objective.optimise import CancelToken, stalled, upsample

# --- losses: analytic gradients against finite differences on a tiny net ----------

class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1).double()
        self.c2 = torch.nn.Conv2d(4, 5, 3, stride=2, padding=1).double()

    def forward(self, x):
        a = torch.tanh(self.c1(x))
        b = torch.tanh(self.c2(a))
        return {"a": a, "b": b, "v": b.mean(dim=(2, 3))}


def test_loss_gradients_match_finite_differences():
    net = TinyNet()
    torch.manual_seed(1)
    ref = {k: v.detach() for k, v in net(torch.rand(1, 3, 8, 8, dtype=torch.float64)).items()}
    guide = {k: v.detach() for k, v in net(torch.rand(1, 3, 8, 8, dtype=torch.float64)).items()}
    target = attribute_target(ref, guide, 0.7)
    mask = torch.rand(8, 8, dtype=torch.float64)
    anchor = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 255

    def total(x):
        f = net(x)
        masked = {k: MaskedTarget.of(v, mask) for k, v in target.items()}
        return (identity_loss(f, ref, {"v": 1.0, "b": 0.5}) + attribute_loss(f, masked, {"a": 1.0, "b": 0.3})
                + total_variation(x * 255, mask) + colour_anchor(x * 255, anchor, mask, factor=2)
                + gram_loss(f, masked, {"a": 0.2}))

    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(total, (x,), eps=1e-6, atol=1e-5)


def test_feature_distance_is_zero_at_target_and_masked():
    f = torch.rand(1, 4, 6, 6)
    assert float(feature_distance(f, f)) == 0.0
    g = f.clone()
    g[..., :3, :] += 1.0  # differ only in the top half
    bottom = torch.zeros(6, 6)
    bottom[3:] = 1
    assert float(feature_distance(g, f, bottom)) == pytest.approx(0.0, abs=1e-7)
    assert float(feature_distance(g, f, 1 - bottom)) > 0.1


def test_masked_target_reads_only_the_masks_box_and_equals_the_full_distance():
    torch.manual_seed(2)
    f, target = torch.rand(1, 4, 12, 16, dtype=torch.float64), torch.rand(1, 4, 12, 16, dtype=torch.float64)
    mask = torch.zeros(24, 32, dtype=torch.float64)
    mask[8:15, 4:21] = torch.rand(7, 17, dtype=torch.float64) + 0.1
    masked = MaskedTarget.of(target, mask)
    assert masked.target.shape[-2:] == (4, 9)  # rows 8..14, columns 4..20 at half size
    assert float(masked.distance(f)) == pytest.approx(float(feature_distance(f, target, mask)), rel=1e-12)
    far = f.clone()
    far[..., :3, :] += 5.0  # outside the box: no effect
    assert float(masked.distance(far)) == pytest.approx(float(masked.distance(f)), rel=1e-12)
    vector = MaskedTarget.of(target.mean(dim=(2, 3)), mask)  # a vector (fc) target ignores the mask
    assert float(vector.distance(f.mean(dim=(2, 3)))) == pytest.approx(
        float(feature_distance(f.mean(dim=(2, 3)), target.mean(dim=(2, 3)))), rel=1e-12)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape,size", [((7, 9), (448, 448)), ((28, 28), (300, 451)), ((5, 5), (5, 5))])
def test_upsample_as_matrices_equals_interpolate(mode, shape, size):
    x = torch.randn(1, 3, *shape, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(x, size=size, mode=mode, align_corners=False)
    assert torch.allclose(upsample(x.float(), size, mode).double(), expected, atol=1e-5)


def test_strength_moves_the_target_linearly():
    ref, guide = {"a": torch.zeros(3)}, {"a": torch.ones(3)}
    assert torch.equal(attribute_target(ref, guide, 0.0)["a"], ref["a"])
    assert torch.allclose(attribute_target(ref, guide, 2.0)["a"], torch.full((3,), 2.0))


# --- the engine end to end on real photos -----------------------------------------

def test_edit_opens_the_mouth_region_only_and_is_deterministic(small_pair, dlib_backbone):
    ref, guide = small_pair
    a = edit(ref, guide=guide, region="mouth", iterations=8, backbone=dlib_backbone, seed=3)
    b = edit(ref, guide=guide, region="mouth", iterations=8, backbone=dlib_backbone, seed=3)
    assert np.array_equal(a.image, b.image)
    assert a.history and a.history[-1]["total"] < a.history[0]["total"]
    before = np.asarray(Image.open(ref).convert("RGB")).astype(np.float32)
    changed = np.abs(a.image - before).max(-1) > 0.5
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 500
    h = before.shape[0]
    assert ys.min() > 0.3 * h  # nothing changed above the nose: forehead and eyes are untouched
    assert 0 <= a.descriptor_distance < 0.6  # still the same person for dlib


def test_stall_rule_stops_only_on_diminishing_returns():
    assert not stalled([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 4, 0.05)  # steady progress
    assert stalled([1.0, 0.5, 0.45, 0.449, 0.4489, 0.4488, 0.4487], 4, 0.05)  # the last 4 gained 0.0013 of 0.55
    assert not stalled([1.0, 0.5, 0.45, 0.449, 0.4489, 0.4488], 4, 0.05)  # the last 4 gained 0.0512
    assert not stalled([1.0, 1.0, 1.0, 1.0], 4, 0.05)  # fewer than 5 evaluations: nothing to compare yet
    assert not stalled([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, 0.0)  # 0: never
    assert stalled([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, 0.05)  # no progress at all


def test_a_stalled_stage_ends_early_and_the_progress_total_follows(small_pair, dlib_backbone):
    seen = []
    r = edit(small_pair[0], guide=small_pair[1], iterations=40, backbone=dlib_backbone, progress=seen.append,
             overrides={"stall": 1.0, "stall_evaluations": 3})  # any gain is too little: 3 + 1 per stage
    assert len(r.history) == 8 and seen[-1].step == seen[-1].total == 8
    assert min(h["total"] for h in r.history[4:]) <= min(h["total"] for h in r.history[:4])
    for n in (1, 12):  # never more evaluations than --iterations (L-BFGS's line search would overrun)
        full = edit(small_pair[0], guide=small_pair[1], iterations=n, backbone=dlib_backbone, overrides={"stall": 0})
        assert len(full.history) == n


def test_the_cli_progress_bar_follows_a_shrinking_total():
    from engine.frontends.cli import ProgressBar
    from engine.objective.optimise import Progress

    bar = ProgressBar(40)
    try:
        bar(Progress(5, 40, {"total": 1.0}, 0.1))
        bar(Progress(12, 29, {"total": 0.9}, 0.2))  # the first stage stalled: 11 evaluations fewer
        assert (bar.bar.n, bar.bar.total) == (12, 29)
    finally:
        bar.close()


def test_api_takes_arrays_and_pil_images(small_pair, dlib_backbone):
    ref, guide = small_pair
    r = edit(np.asarray(Image.open(ref)), guide=Image.open(guide), iterations=0, backbone=dlib_backbone)
    assert r.image.shape[:2] == np.asarray(Image.open(ref)).shape[:2]
    assert r.settings["iterations"] == 0


def test_cancel_stops_the_optimisation(small_pair, dlib_backbone):
    token = CancelToken()
    steps = []

    def progress(p):
        steps.append(p.step)
        if p.step == 2:
            token.cancel()

    with pytest.raises(FATError) as err:
        edit(small_pair[0], guide=small_pair[1], iterations=50, backbone=dlib_backbone, progress=progress,
             cancel=token)
    assert err.value.exit_code == EXIT_CANCELLED and max(steps) <= 3


def test_progress_reports_every_step_and_finishes(small_pair, dlib_backbone):
    seen = []
    edit(small_pair[0], guide=small_pair[1], iterations=6, backbone=dlib_backbone, progress=seen.append)
    assert [p.step for p in seen][:3] == [1, 2, 3] and seen[-1].step == seen[-1].total == 6
    assert {"identity", "attribute", "tv", "colour", "total"} <= set(seen[1].losses)


def test_cli_edit_end_to_end_with_both_backbones(small_pair, models_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    ref, guide = small_pair
    out = tmp_path / "out.png"
    assert cli_main(["edit", str(ref), "--guide", str(guide), "-o", str(out), "--iterations", "4", "--quiet",
                     "--backbone", "dlib-resnet", "--debug-dir", str(tmp_path / "dbg")]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["settings"]["backbone"] == "dlib-resnet" and "dlib_descriptor_distance_reference_to_result" in side
    assert Image.open(out).size == Image.open(ref).size
    for name in ("crops.png", "before-after.png", "reference-overlay.png", "guide-overlay.png"):
        assert (tmp_path / "dbg" / name).exists(), name
    assert Image.open(tmp_path / "dbg" / "reference-overlay.png").size == Image.open(ref).size
    # VGG-Face (synthetic weights: mechanics only), chosen by default when installed
    out2 = tmp_path / "vgg.png"
    assert cli_main(["edit", str(ref), "--guide", str(guide), "-o", str(out2), "--iterations", "3",
                     "--json-progress"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines[0]["event"] == "progress" and lines[-1]["event"] == "done"
    assert json.loads(out2.with_suffix(".json").read_text())["settings"]["backbone"] == "vggface"


@pytest.mark.parametrize("args, code, text", [
    (["--region", "ears"], EXIT_USAGE, "choose one of"),
    (["--region", "selection"], EXIT_USAGE, "needs a mask"),
    (["--strength", "nan"], EXIT_USAGE, "finite"),
    (["--iterations", "-1"], EXIT_USAGE, "between 0 and 5000"),
    (["--optimizer", "sgd"], EXIT_USAGE, "choose one of"),
    (["--detector", "x"], EXIT_USAGE, "choose one of"),
    (["--seed", "-1"], EXIT_USAGE, "--seed"),
    (["--backbone", "vgg"], EXIT_USAGE, "--backbone"),
    (["-o", "OUT.gif"], EXIT_USAGE, "unsupported output type"),
    (["--strength", "3"], EXIT_USAGE, "strength"),
    (["--device", "cuda"], EXIT_USAGE, "CUDA"),
    (["--guide", "MISSING"], EXIT_INPUT, "no such file"),
    (["--guide", "BLANK"], EXIT_NO_FACE, "no face found in the guide photo"),
    (["-o", "REF"], EXIT_USAGE, "overwrite"),
    (["--set", "identitty=3"], EXIT_USAGE, "unknown name"),
    (["--set", "tv=abc"], EXIT_USAGE, "not a number"),
    (["--set", "identity=inf"], EXIT_USAGE, "between 0 and"),
    (["--set", "attribute_layers.nope=1"], EXIT_USAGE, "no layer"),
])
def test_cli_errors_are_clear(args, code, text, small_pair, models_dir, tmp_path, monkeypatch, capsys):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (120, 120, 120)).save(blank)
    subst = {"MISSING": str(tmp_path / "missing.png"), "BLANK": str(blank), "REF": str(small_pair[0]),
             "OUT.gif": str(tmp_path / "o.gif")}
    base = {"--guide": str(small_pair[1]), "-o": str(tmp_path / "o.png")}
    for i in range(0, len(args), 2):
        base[args[i]] = subst.get(args[i + 1], args[i + 1])
    argv = ["edit", str(small_pair[0]), "--iterations", "2", "--quiet", "--backbone", "dlib-resnet"]
    for k, v in base.items():
        argv += [k, v]
    assert cli_main(argv) == code
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_keep_mask_makes_changing_the_opening_cost_more(dlib_backbone):
    from engine.objective.optimise import Problem, loss_terms
    from engine.objective.recipes import DLIB_RESNET

    init = torch.full((1, 3, 150, 150), 120.0)
    mask = torch.ones(150, 150)
    feats = {k: v.detach() for k, v in dlib_backbone.features(init, ["descriptor", "pool1"]).items()}
    recipe = replace(DLIB_RESNET, weights={"change": 1.0}, identity_layers={"descriptor": 1.0},
                     attribute_layers={"pool1": 1.0}, keep=10.0)
    args = (dlib_backbone, init, mask, feats, {"pool1": feats["pool1"]}, recipe)
    x = init + 10
    plain = float(loss_terms(Problem(*args), x)["change"])
    kept = float(loss_terms(Problem(*args, keep=torch.ones(150, 150)), x)["change"])
    assert kept == pytest.approx(11 * plain, rel=1e-5)


def test_the_optimisation_returns_the_best_point_it_evaluated(dlib_backbone):
    from engine.objective.optimise import Problem, loss_terms, optimise
    from engine.objective.recipes import DLIB_RESNET

    torch.manual_seed(0)
    init = torch.rand(1, 3, 150, 150) * 255
    target = {k: v.detach() for k, v in dlib_backbone.features(torch.rand(1, 3, 150, 150) * 255,
                                                                ["descriptor", "pool1"]).items()}
    recipe = replace(DLIB_RESNET, attribute_layers={"pool1": 1.0})
    problem = Problem(dlib_backbone, init, torch.ones(150, 150), target, {"pool1": target["pool1"]}, recipe)
    for n in (3, 4, 5, 9):  # the best may be in either stage (a finer stage's start can be worse)
        x, history = optimise(problem, n)
        best = min(h["total"] for h in history)
        assert len(history) == n and best < history[0]["total"]
        with torch.no_grad():
            assert float(sum(loss_terms(problem, x).values())) == pytest.approx(best, rel=1e-4)


def test_inner_mouth_mask_covers_the_opening(obama):
    from engine.face.detect import detect_faces
    from engine.face.masks import region_mask

    pts = detect_faces(obama)[0].landmarks
    m = region_mask(pts, "inner_mouth", obama.shape[:2])
    x, y = np.round(pts[60:68].mean(0)).astype(int)
    assert m[y, x] > 0.9 and m[int(pts[33, 1]), int(pts[33, 0])] == 0  # not the nose


def test_strength_scales_the_visible_change(small_pair, dlib_backbone):
    ref, guide = small_pair
    before = np.asarray(Image.open(ref).convert("RGB")).astype(np.float32)
    change = {}
    for s in (0.0, 0.5, 1.0):
        r = edit(ref, guide=guide, strength=s, iterations=0, backbone=dlib_backbone)
        change[s] = float(np.abs(r.image - before).mean())
    assert change[0.0] == 0.0 and 0 < change[0.5] < change[1.0]


def test_a_closed_output_pipe_stops_the_edit_cleanly(small_pair, models_dir, tmp_path):
    """`python -m engine edit ... --json-progress | head -1`: the reader goes away; the edit stops as if cancelled
    (exit 6, one line on stderr, no traceback, no output file)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    ref, guide = small_pair
    out = tmp_path / "never.png"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "edit", str(ref), "--guide", str(guide), "-o", str(out),
                             "--iterations", "200", "--json-progress", "--no-service", "--backbone", "dlib-resnet"],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "FAT_MODELS_DIR": str(models_dir)})
    assert json.loads(proc.stdout.readline())["event"] == "progress"
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(120) == EXIT_CANCELLED
    assert "the output pipe was closed" in err and "Traceback" not in err and "internal error" not in err
    assert not out.exists()
