"""The GIMP 3 plug-in in a real headless GIMP: same pixels as the CLI, errors as GIMP errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.frontends.cli import main as cli_main
from engine.options import schema
from tests.conftest import EXAMPLES
from tests.gimp_env import PROJECT, find_gimp, meaningful

SETTINGS = {"region": "mouth", "iterations": 6, "strength": 1.0, "seed": 0, "backbone": "dlib-resnet"}


@pytest.fixture(scope="module")
def gimp():
    found, reason = find_gimp()
    if found is None:
        if os.environ.get("FAT_REQUIRE_GIMP") == "1":
            pytest.fail(f"GIMP 3 is required here (FAT_REQUIRE_GIMP=1) but unavailable: {reason}")
        pytest.skip(reason)
    return found


def test_plugin_file_is_where_gimp_looks():
    folder = PROJECT / "plugin" / "face-attribute-transfer"
    script = folder / "face-attribute-transfer.py"
    assert script.exists() and os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env python3")


@pytest.mark.slow
def test_plugin_in_headless_gimp_matches_the_cli(gimp, models_dir, tmp_path, monkeypatch):
    scratch = tmp_path
    ref = scratch / "reference.png"
    guide = scratch / "guide.png"
    for src, dst in ((EXAMPLES / "biden_2.jpg", ref), (EXAMPLES / "obama_1.jpg", guide)):
        im = Image.open(src).convert("RGB")
        im.thumbnail((480, 480))
        im.save(dst)
    blank = scratch / "blank.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank)
    params = {
        **SETTINGS, "scratch": str(scratch), "result": str(scratch / "result.json"),
        "cases": {"edit": {"reference": str(ref), "guide": str(guide), "pad": [40, 30]},
                  "edit16": {"reference": str(ref), "guide": str(guide), "precision16": True},
                  "noface": {"reference": str(blank), "guide": str(guide)}},
    }
    (scratch / "params.json").write_text(json.dumps(params))
    batch = scratch / "batch.py"
    batch.write_text((PROJECT / "tests" / "gimp_batch.py").read_text())
    env = {"FAT_BATCH_PARAMS": str(scratch / "params.json"), "FAT_MODELS_DIR": str(models_dir),
           "FAT_ENGINE_PYTHON": sys.executable, "FAT_PROJECT": str(PROJECT)}
    proc = gimp.run(scratch, batch, env, extra_paths=(models_dir,))
    assert (scratch / "result.json").exists(), f"GIMP batch failed:\n{meaningful(proc.stdout + proc.stderr)}"
    cases = json.loads((scratch / "result.json").read_text())["cases"]

    edit = cases["edit"]
    assert "exception" not in edit, edit
    assert edit["found"] and edit["success"], (edit.get("error"), meaningful(proc.stdout + proc.stderr)[-3000:])
    # the dialog is generated from the options schema: same names, defaults and ranges
    assert {"guide-layer", "guide-file"} <= set(edit["config_properties"])
    for o in schema():
        prop = o["name"].replace("_", "-")
        assert (prop in edit["config_properties"]) == o["gimp"], prop
        if o["gimp"]:
            assert edit["config_defaults"][prop] == (o["default"] if o["default"] is not None else
                                                     "automatic" if o["choices"] else o["low"] - 1), prop
    assert edit["layers_after"] == edit["layers_before"] + 1
    assert edit["reference_untouched"]
    assert edit["offsets"] == edit["reference_offsets"] == [40, 30]
    assert edit["position"] == edit["reference_position"] - 1  # directly above the current layer
    w, h = Image.open(ref).size
    layer = np.frombuffer(Path(edit["raw"]).read_bytes(), np.uint8).reshape(h, w, 4)
    assert (layer[..., 3] == 255).all()

    monkeypatch.setenv("FAT_MODELS_DIR", str(models_dir))
    out = tmp_path / "cli.png"
    assert cli_main(["edit", str(ref), "--guide", str(guide), "-o", str(out), "--quiet",
                     "--backbone", SETTINGS["backbone"], "--region", SETTINGS["region"],
                     "--iterations", str(SETTINGS["iterations"]),
                     "--strength", str(SETTINGS["strength"]), "--seed", str(SETTINGS["seed"])]) == 0
    cli = np.asarray(Image.open(out).convert("RGB")).astype(int)
    diff = np.abs(layer[..., :3].astype(int) - cli)
    assert diff.max() <= 1, f"plug-in and CLI differ by up to {diff.max()}/255"
    assert edit["export_success"]  # GIMP's own PNG export: the layer sits at its offsets on the canvas
    exported = np.asarray(Image.open(edit["export"]).convert("RGBA")).astype(int)
    assert exported.shape[:2] == (h + 30, w + 40)
    assert (exported[:30, :, 3] == 0).all() and (exported[:, :40, 3] == 0).all()
    assert np.abs(exported[30:, 40:, :3] - cli).max() <= 1
    assert (np.abs(cli - np.asarray(Image.open(ref)).astype(int)).max(-1) > 0).sum() > 200  # it did edit

    edit16 = cases["edit16"]
    assert edit16.get("success"), edit16
    assert "U16" in edit16["precision"]
    layer16 = np.frombuffer(Path(edit16["raw"]).read_bytes(), np.uint8).reshape(h, w, 4)
    assert np.abs(layer16[..., :3].astype(int) - cli).max() <= 2  # 16-bit path, read back at 8 bits

    noface = cases["noface"]
    assert "exception" not in noface, noface
    assert not noface["success"] and noface["layers_after"] == noface["layers_before"]
    assert "no face" in (noface["error"] or "").lower()
    assert noface["reference_untouched"]
