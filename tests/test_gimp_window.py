"""The plug-in in GIMP's real window: Xvfb + openbox + GIMP 3 GUI (in the headless test's chroot), the dialog
opened by an interactive run and confirmed with xdotool, screenshots kept, the result layer checked; then
Filters > Repeat (WITH_LAST_VALS, the guide remembered) and an image closed while the engine runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EXAMPLES
from tests.gimp_env import PROJECT, find_gui_gimp, gimp_or_skip, meaningful

SHOTS = Path(os.environ.get("FAT_WINDOW_SHOTS", "/tmp/gimp-window-shots"))  # a copy the lead can look at
SIZE = 400  # small photos, few iterations: the whole test is about a minute

BATCH = r'''
import json, os
import gi
gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio
P = json.load(open(os.environ["FAT_WINDOW_PARAMS"]))
PROC = Gimp.get_pdb().lookup_procedure("plug-in-face-attribute-transfer")
OUT = {}


def mark(name):
    open(os.path.join(P["dir"], name), "w").close()


def opened(path):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
    Gimp.Display.new(image)
    Gimp.displays_flush()
    return image, image.get_layers()[0]


def run(mode, image, layer, **values):
    config = PROC.create_config()
    config.set_property("run-mode", mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key, value in values.items():
        config.set_property(key, value)
    result = PROC.run(config)
    status = result.index(0)
    out = {"status": status.value_nick, "error": Gimp.get_pdb().get_last_error() if status.value_nick != "success"
           else ""}
    if image.is_valid():
        out.update(layers=[l.get_name() for l in image.get_layers()],
                   selected=[l.get_name() for l in image.get_selected_layers()])
    if status == Gimp.PDBStatusType.SUCCESS and result.index(1) is not None and result.index(1).is_valid():
        new = result.index(1)
        rect = Gegl.Rectangle.new(0, 0, new.get_width(), new.get_height())
        raw = os.path.join(P["dir"], f"{len(OUT)}.raw")
        open(raw, "wb").write(bytes(new.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)))
        out.update(raw=raw, size=[new.get_width(), new.get_height()])
    return out


try:
    guide_image, guide = opened(P["guide"])  # another open image: the dialog preselects its layer
    image, layer = opened(P["reference"])
    mark("dialog-coming")
    OUT["interactive"] = run(Gimp.RunMode.INTERACTIVE, image, layer, iterations=P["iterations"],
                             backbone="dlib-resnet")
    OUT["repeat"] = run(Gimp.RunMode.WITH_LAST_VALS, image, layer)  # Filters > Repeat
    third, third_layer = opened(P["third"])
    mark("closing-run")  # the driver closes this image while the engine runs
    OUT["closed"] = run(Gimp.RunMode.WITH_LAST_VALS, third, third_layer)
    OUT["closed"]["image_valid_after"] = third.is_valid()
except Exception as e:
    OUT["exception"] = f"{type(e).__name__}: {e}"
json.dump(OUT, open(P["status"], "w"))
'''

DRIVER = r'''
cd "$DIR"
Xvfb :57 -screen 0 1280x900x24 -nolisten tcp >xvfb.log 2>&1 &
XVFB=$!
sleep 2
export DISPLAY=:57
openbox >openbox.log 2>&1 &
OPENBOX=$!
gimp-3.0 -n -d -f --gimprc="$GIMPRC" --batch-interpreter=python-fu-eval -b "exec(open('$DIR/batch.py').read())" \
  >gimp.log 2>&1 &
GIMP=$!
wait_for() { for i in $(seq 1 "$2"); do eval "$1" && return 0; sleep 1; done; return 1; }
dialog() { xdotool search --onlyvisible --name "^Attribute Transfer" 2>/dev/null | head -1; }
wait_for '[ -e dialog-coming ] && [ -n "$(dialog)" ]' 180 || echo "no dialog" >>driver.log
sleep 3
xdotool mousemove 1270 890  # no tooltip over the dialog
WELCOME=$(xdotool search --onlyvisible --name "^Welcome to GIMP" 2>/dev/null | head -1)
[ -n "$WELCOME" ] && xdotool windowactivate --sync "$WELCOME" key Escape >/dev/null 2>&1
sleep 1
import -window root dialog.png
W=$(dialog)
eval "$(xdotool getwindowgeometry --shell "$W")"  # OK sits at the dialog's bottom right: click it like a user
xdotool mousemove --window "$W" $((WIDTH - 68)) $((HEIGHT - 46)) click 1
sleep 1
[ -n "$(dialog)" ] && { xdotool windowactivate --sync "$W" >/dev/null 2>&1; xdotool key Return; }
sleep 4
import -window root running.png
wait_for '[ -e closing-run ]' 150 || echo "no closing run" >>driver.log
sleep 6
import -window root before-close.png
xdotool key ctrl+w
sleep 2
import -window root closing.png
xdotool key ctrl+d >/dev/null 2>&1  # "Discard Changes" if GIMP asks
wait_for '[ -e status.json ]' 150 || echo "no status" >>driver.log
sleep 2
import -window root after.png
kill $GIMP 2>/dev/null; sleep 1; kill -9 $GIMP 2>/dev/null; kill $OPENBOX $XVFB 2>/dev/null
exit 0
'''


@pytest.fixture(scope="module")
def gui_gimp():
    return gimp_or_skip(find_gui_gimp, "GIMP 3 with a virtual screen")


def small(src: Path, dst: Path, size: int = SIZE) -> Path:
    im = Image.open(src).convert("RGB")
    im.thumbnail((size, size))
    im.save(dst)
    return dst


@pytest.mark.slow
def test_the_dialog_in_a_real_window_edits_repeats_and_survives_a_closed_image(gui_gimp, models_dir, tmp_path):
    ref = small(EXAMPLES / "biden_2.jpg", tmp_path / "photo.png")
    small(EXAMPLES / "obama_1.jpg", tmp_path / "guide.png", 520)  # a wide photo: its face needs the pixels
    small(EXAMPLES / "biden_2.jpg", tmp_path / "third.png")
    params = {"dir": str(tmp_path), "reference": str(ref), "guide": str(tmp_path / "guide.png"),
              "third": str(tmp_path / "third.png"), "status": str(tmp_path / "status.json"), "iterations": 5}
    (tmp_path / "params.json").write_text(json.dumps(params))
    (tmp_path / "batch.py").write_text(BATCH)
    (tmp_path / "driver.sh").write_text(DRIVER)
    gimprc = gui_gimp.gimprc(tmp_path, "(show-welcome-dialog no)\n")
    runtime = Path(tempfile.mkdtemp(prefix="fat-rt-", dir="/tmp"))  # short: a Unix socket path has ~108 bytes
    os.chmod(runtime, 0o700)
    timeline = tmp_path / "timeline.log"
    env = {"DIR": str(tmp_path), "GIMPRC": str(gimprc), "FAT_WINDOW_PARAMS": str(tmp_path / "params.json"),
           "FAT_MODELS_DIR": str(models_dir), "FAT_ENGINE_PYTHON": sys.executable, "FAT_PROJECT": str(PROJECT),
           "XDG_RUNTIME_DIR": str(runtime), "FAT_SERVICE_IDLE": "300", "FAT_PLUGIN_TIMELINE": str(timeline)}
    try:
        proc = gui_gimp.run_command(tmp_path, ["sh", str(tmp_path / "driver.sh")], env, (models_dir, runtime),
                                    timeout=600)
    finally:  # the warm engine the plug-in started: stopped, not left to its idle time
        subprocess.run([sys.executable, "-m", "engine", "serve", "--stop"], cwd=PROJECT, capture_output=True,
                       env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
        shutil.rmtree(runtime, ignore_errors=True)
    keep_screenshots(tmp_path)
    log = meaningful((tmp_path / "gimp.log").read_text(errors="replace") if (tmp_path / "gimp.log").exists() else "")
    assert (tmp_path / "status.json").exists(), f"{proc.stdout}{proc.stderr}\n{log[-3000:]}"
    status = json.loads((tmp_path / "status.json").read_text())
    assert "exception" not in status, status

    first = status["interactive"]  # the dialog, confirmed with Return: the preselected guide (the other image)
    assert first["status"] == "success", (first, log[-2000:])
    assert first["layers"] == ["Background (mouth transfer)", "Background"] or first["layers"][0].endswith(
        "(mouth transfer)"), first
    assert first["selected"] == [first["layers"][1]]  # the photo stays selected for the next run
    edited = np.frombuffer(Path(first["raw"]).read_bytes(), np.uint8).reshape(*first["size"][::-1], 4)
    photo = np.asarray(Image.open(ref).convert("RGB")).astype(int)
    assert (np.abs(edited[..., :3].astype(int) - photo).max(-1) > 10).sum() > 100  # the mouth changed

    repeat = status["repeat"]  # Filters > Repeat: the remembered guide, the same settings, the same result
    assert repeat["status"] == "success", repeat
    assert Path(repeat["raw"]).read_bytes() == Path(first["raw"]).read_bytes()
    assert repeat["layers"][0] != first["layers"][0] and repeat["layers"][1] == first["layers"][0]  # on top
    assert repeat["layers"][0].startswith(first["layers"][0]) and repeat["layers"][0].count("transfer") == 1

    runs = runs_of(timeline)  # the warm engine: the second try pays only its own work
    waits = [optimising_after(run) for run in runs]
    (SHOTS / "timeline.txt").write_text("".join(f"run {i + 1}: first optimisation step {w:.2f} s after OK; stages: "
                                                f"{', '.join(e for _, e in run[:7])}\n" for i, (w, run) in
                                                enumerate(zip(waits, runs, strict=True))))
    print(f"time from OK to the first optimising step: {', '.join(f'{w:.2f} s' for w in waits)}")
    assert len(runs) == 3 and "Loading the model" in [e for _, e in runs[0]], runs
    assert "Loading the model" not in [e for _, e in runs[1]], runs[1]  # the service still held it
    assert waits[1] < 5.0, waits  # measured 2-core figures are in the issue note; this bound only catches a cold start

    closed = status["closed"]  # the image closed by the user while the engine ran: no traceback, no cascade
    assert closed["status"] in ("success", "execution-error"), closed
    assert "Traceback" not in log and "returned NULL" not in log and "Too many error messages" not in log
    assert "cannot link" not in log  # only the chosen guide source's field is editable (follow_guide_source)
    assert "mnemonic" not in log  # every field its own Alt+key: GIMP logs "no mnemonic" or "duplicate mnemonic"


def runs_of(timeline: Path) -> list[list[tuple[float, str]]]:
    """The plug-in's timeline (FAT_PLUGIN_TIMELINE), one list of (time, event) per run."""
    runs: list[list[tuple[float, str]]] = []
    for line in timeline.read_text().splitlines():
        t, event = line.split("\t", 1)
        if event == "run started":
            runs.append([])
        runs[-1].append((float(t), event))
    return runs


def optimising_after(run: list[tuple[float, str]]) -> float:
    """Seconds from OK to the first optimisation step ("Optimising 1/N")."""
    return next((t for t, e in run if e.startswith("Optimising ") and "/" in e), float("nan")) - run[0][0]


def keep_screenshots(folder: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for png in folder.glob("*.png"):
        if png.name not in ("photo.png", "guide.png", "third.png"):
            shutil.copy2(png, SHOTS / png.name)
