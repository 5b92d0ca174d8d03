# Runs inside GIMP 3 (python-fu-eval): drive the plug-in like a user would, non-interactively.
# Parameters come from FAT_BATCH_PARAMS (a JSON file); results go to the file it names.
# Each case: load a photo, add the guide as a layer, optionally select, run the procedure, report.
import json
import os
import subprocess
import tempfile

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

with open(os.environ["FAT_BATCH_PARAMS"]) as _f:
    P = json.load(_f)
OUT = {"cases": {}}
PROC = "plug-in-face-attribute-transfer"
HOOK = os.environ.get("FAT_PLUGIN_TEST_HOOK")  # a file the plug-in reads after the engine returns
PROGRESS = os.environ.get("FAT_PLUGIN_PROGRESS_LOG")


def pixels(drawable):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP))


def status_of(result):
    status = result.index(0)
    return status, status.value_nick if hasattr(status, "value_nick") else str(status)


def make_config(proc, image, layer, spec, run_mode=Gimp.RunMode.NONINTERACTIVE):
    config = proc.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for key in ("region", "iterations", "strength", "seed", "backbone"):
        config.set_property(key, spec.get(key, P[key]))
    for key in ("guide-source", "attribute", "preview", "face"):
        if key in spec:
            config.set_property(key, spec[key])
    if "bank-file" in spec:
        config.set_property("bank-file", Gio.File.new_for_path(spec["bank-file"]))
    return config


def describe_config(case, config):
    case["config_properties"] = [p.name for p in config.list_properties()]
    case["config_labels"] = {p.name: p.get_nick() for p in config.list_properties()}
    case["config_defaults"] = {}
    for p in config.list_properties():
        value = config.get_property(p.name)
        if isinstance(value, (int, float, str)) or value is None:
            case["config_defaults"][p.name] = value


def temp_folders():
    """A stale folder (its process is dead) and a live one (this process)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    base = tempfile.gettempdir()
    stale = tempfile.mkdtemp(prefix=f"fat-gimp-{dead.pid}-", dir=base)
    live = tempfile.mkdtemp(prefix=f"fat-gimp-{os.getpid()}-", dir=base)
    return stale, live


def load_case_image(spec):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(spec["reference"]))
    if spec.get("precision16"):  # a 16-bit image: the plug-in must pass 16-bit pixels through
        image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    if spec.get("grayscale"):  # Image > Mode > Grayscale: a black-and-white photo
        image.convert_grayscale()
    layer = image.get_layers()[0]
    pad = spec.get("pad")
    if pad:  # a larger canvas, so the layer has offsets the plug-in must respect
        image.resize(image.get_width() + pad[0], image.get_height() + pad[1], pad[0], pad[1])
    guide = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(spec["guide"]))
    above = spec.get("guide_above", False)  # as the README suggests: the guide opened as a layer above
    image.insert_layer(guide, None, 0 if above else 1)
    guide.set_visible(above)
    if spec.get("select"):
        x, y, w, h = spec["select"]
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
    return image, layer, guide


def report_result(case, name, image, layer, result):
    new = result.index(1)
    raw = os.path.join(P["scratch"], name + ".raw")
    with open(raw, "wb") as f:
        f.write(pixels(new))
    selected = image.get_selected_layers()
    case.update(raw=raw, width=new.get_width(), height=new.get_height(), offsets=list(new.get_offsets()[1:]),
                position=image.get_item_position(new), reference_position=image.get_item_position(layer),
                name=new.get_name(), reference_name=layer.get_name(), gray=new.is_gray(),
                selected=[s.get_name() for s in selected])
    return new


def export_only(image, new, png):
    """Export the image as a user would, with only the new layer visible."""
    for other in image.get_layers():
        other.set_visible(other.get_id() == new.get_id())
    export = Gimp.get_pdb().lookup_procedure("file-png-export")
    econfig = export.create_config()
    econfig.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    econfig.set_property("image", image)
    econfig.set_property("file", Gio.File.new_for_path(png))
    econfig.set_property("save-transparent", True)
    return export.run(econfig).index(0) == Gimp.PDBStatusType.SUCCESS


def run_case(name, spec):
    case = {}
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    case["found"] = proc is not None
    case["image_types"] = proc.get_image_types()  # the kinds of image the menu entry is active for
    image, layer, guide = load_case_image(spec)
    case["precision"] = str(image.get_precision())
    before = pixels(layer)
    if spec.get("grayscale"):  # GIMP's own gray conversion, for the CLI to edit the same pixels
        case["reference_raw"] = os.path.join(P["scratch"], name + "-reference.raw")
        with open(case["reference_raw"], "wb") as f:
            f.write(before)
    layers_before = len(image.get_layers())
    describe_config(case, proc.create_config())  # the defaults, as the dialog starts
    config = make_config(proc, image, layer, spec)
    if spec.get("guide-source", "layer") == "layer":
        config.set_property("guide-layer", guide)
    if spec.get("sweep"):
        stale, live = temp_folders()
    if HOOK:
        with open(HOOK, "w") as f:
            f.write(spec.get("hook", ""))
    if PROGRESS and os.path.exists(PROGRESS):
        os.remove(PROGRESS)
    result = proc.run(config)
    status, case["status"] = status_of(result)
    case["success"] = status == Gimp.PDBStatusType.SUCCESS
    case["error"] = Gimp.get_pdb().get_last_error()
    if PROGRESS and os.path.exists(PROGRESS):
        with open(PROGRESS) as f:
            case["progress"] = f.read().splitlines()
    if spec.get("sweep"):
        case["stale_left"], case["live_left"] = os.path.isdir(stale), os.path.isdir(live)
        os.rmdir(live)
    if not image.is_valid():
        case["image_closed"] = True
        return case
    case["layers_before"], case["layers_after"] = layers_before, len(image.get_layers())
    case["reference_untouched"] = pixels(layer) == before
    case["reference_offsets"] = list(layer.get_offsets()[1:])
    if case["success"]:
        new = report_result(case, name, image, layer, result)
        if spec.get("repeat"):  # Filters > Repeat: WITH_LAST_VALS (after an interactive run: the real window)
            again = proc.run(make_config(proc, image, layer, {}, Gimp.RunMode.WITH_LAST_VALS))
            case["repeat"] = {"status": status_of(again)[1], "error": Gimp.get_pdb().get_last_error()}
            if again.index(0) == Gimp.PDBStatusType.SUCCESS:
                case["repeat"].update(same_pixels=pixels(again.index(1)) == pixels(new),
                                      name=again.index(1).get_name(),
                                      selected=[s.get_name() for s in image.get_selected_layers()])
        if spec.get("export"):
            case["export"] = os.path.join(P["scratch"], name + "-export.png")
            case["export_success"] = export_only(image, new, case["export"])
    return case


for name, spec in P["cases"].items():
    try:
        OUT["cases"][name] = run_case(name, spec)
    except Exception as e:  # report, so the test can show what broke inside GIMP
        OUT["cases"][name] = {"exception": f"{type(e).__name__}: {e}"}
with open(P["result"], "w") as f:
    json.dump(OUT, f)
