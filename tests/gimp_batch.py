# Runs inside GIMP 3 (python-fu-eval): drive the plug-in like a user would, non-interactively.
# Parameters come from FAT_BATCH_PARAMS (a JSON file); results go to the file it names.
import json
import os

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

with open(os.environ["FAT_BATCH_PARAMS"]) as _f:
    P = json.load(_f)
OUT = {"cases": {}}
PROC = "plug-in-face-attribute-transfer"


def pixels(drawable):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP))


def run_case(name, reference, guide, pad, precision16=False):
    case = {}
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(reference))
    if precision16:  # a 16-bit image: the plug-in must pass 16-bit pixels through
        image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    case["precision"] = str(image.get_precision())
    layer = image.get_layers()[0]
    if pad:  # a larger canvas, so the layer has offsets the plug-in must respect
        image.resize(image.get_width() + pad[0], image.get_height() + pad[1], pad[0], pad[1])
    guide_layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(guide))
    image.insert_layer(guide_layer, None, 1)
    guide_layer.set_visible(False)
    before = pixels(layer)
    layers_before = len(image.get_layers())
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    case["found"] = proc is not None
    config = proc.create_config()
    case["config_properties"] = [p.name for p in config.list_properties()]
    case["config_defaults"] = {}
    for p in config.list_properties():
        value = config.get_property(p.name)
        if isinstance(value, (int, float, str)) or value is None:
            case["config_defaults"][p.name] = value
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("guide-layer", guide_layer)
    config.set_property("region", P["region"])
    config.set_property("iterations", P["iterations"])
    config.set_property("strength", P["strength"])
    config.set_property("seed", P["seed"])
    config.set_property("backbone", P["backbone"])
    result = proc.run(config)
    status = result.index(0)
    case["status"] = status.value_nick if hasattr(status, "value_nick") else str(status)
    case["success"] = status == Gimp.PDBStatusType.SUCCESS
    case["error"] = Gimp.get_pdb().get_last_error()
    case["layers_before"], case["layers_after"] = layers_before, len(image.get_layers())
    case["reference_untouched"] = pixels(layer) == before
    case["reference_offsets"] = list(layer.get_offsets()[1:])
    if case["success"]:
        new = result.index(1)
        raw = os.path.join(P["scratch"], name + ".raw")
        with open(raw, "wb") as f:
            f.write(pixels(new))
        case.update(raw=raw, width=new.get_width(), height=new.get_height(), offsets=list(new.get_offsets()[1:]),
                    position=image.get_item_position(new), reference_position=image.get_item_position(layer),
                    name=new.get_name())
        # and export the image as a user would, with only the new layer visible
        for other in image.get_layers():
            other.set_visible(other.get_id() == new.get_id())
        png = os.path.join(P["scratch"], name + "-export.png")
        export = Gimp.get_pdb().lookup_procedure("file-png-export")
        econfig = export.create_config()
        econfig.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        econfig.set_property("image", image)
        econfig.set_property("file", Gio.File.new_for_path(png))
        econfig.set_property("save-transparent", True)
        eresult = export.run(econfig)
        case["export_success"] = eresult.index(0) == Gimp.PDBStatusType.SUCCESS
        case["export"] = png
    OUT["cases"][name] = case


for name, spec in P["cases"].items():
    try:
        run_case(name, spec["reference"], spec["guide"], spec.get("pad"), spec.get("precision16", False))
    except Exception as e:  # report, so the test can show what broke inside GIMP
        OUT["cases"][name] = {"exception": f"{type(e).__name__}: {e}"}
with open(P["result"], "w") as f:
    json.dump(OUT, f)
