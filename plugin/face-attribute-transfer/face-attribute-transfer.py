#!/usr/bin/env python3
# face-attribute-transfer: GIMP 3 plug-in.
#
# Filters > Face > Attribute Transfer... gives the current layer's face the
# attribute (mouth, eyes, brows...) of a guide layer, keeping the person's
# identity. GIMP's Python has no torch, so the work is done by the engine in the
# project's .venv, started as a subprocess; pixels travel as raw files in a
# private temporary folder, progress as JSON lines. The result is a new layer
# above the current one, in one undo step; on error nothing is added.

import json
import os
import shutil
import sys
import tempfile

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

PROC_NAME = "plug-in-face-attribute-transfer"
REGIONS = [("mouth", "Mouth"), ("eyes", "Eyes"), ("eyebrows", "Eyebrows"), ("nose", "Nose"),
           ("upper_face", "Upper face"), ("lower_face", "Lower face"), ("face", "Whole face"),
           ("selection", "Selection")]
DEVICES = [("auto", "Automatic"), ("cpu", "CPU"), ("cuda", "CUDA GPU")]
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import engine_process  # noqa: E402  (beside this file: the gi-free subprocess part)


def engine_command():
    """The engine's interpreter and project folder: env, then config.json, then the repo layout."""
    python = os.environ.get("FAT_ENGINE_PYTHON")
    project = os.environ.get("FAT_PROJECT")
    config_path = os.path.join(HERE, "config.json")
    if (not python or not project) and os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
        python = python or config.get("python")
        project = project or config.get("project")
    if not project:
        project = os.path.dirname(os.path.dirname(HERE))  # running from the repository's plugin/ folder
    if not python:
        python = os.path.join(project, ".venv", "bin", "python")
    return python, project


def pixel_format(drawable):
    """u8 for 8-bit images, u16 otherwise (the engine keeps 16 bits)."""
    precision = drawable.get_image().get_precision()
    eight = precision in (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
    return ("R'G'B'A u8", "RGBA8") if eight else ("R'G'B'A u16", "RGBA16")


def read_pixels(drawable, babl_format, x=0, y=0, width=None, height=None):
    width = drawable.get_width() if width is None else width
    height = drawable.get_height() if height is None else height
    rect = Gegl.Rectangle.new(x, y, width, height)
    return bytes(drawable.get_buffer().get(rect, 1.0, babl_format, Gegl.AbyssPolicy.CLAMP))


def selection_mask(image, layer):
    """The selection over the layer's area as 8-bit gray bytes, or None when nothing is selected."""
    if Gimp.Selection.is_empty(image):
        return None
    ok, ox, oy = layer.get_offsets()
    channel = image.get_selection()
    return read_pixels(channel, "Y u8", ox, oy, layer.get_width(), layer.get_height())


def write_raw(folder, name, data):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run_engine(request, workdir):
    """Run the engine, driving GIMP's progress bar; returns (ok, message)."""
    python, project = engine_command()
    request_path = os.path.join(workdir, "request.json")
    with open(request_path, "w") as f:
        json.dump(request, f)

    def on_progress(step, total):
        Gimp.progress_update(min(1.0, float(step) / total))
        Gimp.progress_set_text(f"Optimising {step}/{total}")

    ok, message, _ = engine_process.run_engine_process(python, project, request_path, on_progress)
    return ok, message


def attribute_transfer(procedure, run_mode, image, drawables, config, data):
    if run_mode == Gimp.RunMode.INTERACTIVE:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init(PROC_NAME)
        dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config)
        dialog.fill(None)
        if not dialog.run():
            dialog.destroy()
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        dialog.destroy()

    def fail(message):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            Gimp.message(message)
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(
            GLib.quark_from_string("face-attribute-transfer"), message, 0))

    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
        return fail("Select exactly one layer (the photo to edit).")
    layer = drawables[0]
    guide = config.get_property("guide-layer")
    guide_file = config.get_property("guide-file")
    if guide is None and guide_file is None:
        return fail("Choose a guide layer (a face with the wanted attribute) or a guide image file.")
    region = config.get_property("region")
    babl_format, raw_format = pixel_format(layer)

    workdir = tempfile.mkdtemp(prefix="fat-gimp-")
    os.chmod(workdir, 0o700)
    try:
        Gimp.progress_init("Face attribute transfer")
        width, height = layer.get_width(), layer.get_height()
        request = {
            "reference": {"raw": write_raw(workdir, "reference.raw", read_pixels(layer, babl_format)),
                          "width": width, "height": height, "format": raw_format},
            "region": region, "strength": config.get_property("strength"),
            "iterations": config.get_property("iterations"),
            "face": None if config.get_property("face-index") < 0 else config.get_property("face-index"),
            "device": config.get_property("device"), "seed": config.get_property("seed"),
            "backbone": config.get_property("backbone") or None,
            "output": os.path.join(workdir, "result.raw"),
        }
        if guide is not None:
            gfmt, graw = pixel_format(guide)
            request["guide"] = {"raw": write_raw(workdir, "guide.raw", read_pixels(guide, gfmt)),
                                "width": guide.get_width(), "height": guide.get_height(), "format": graw}
        else:
            loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, guide_file)
            flat = loaded.flatten()
            gfmt, graw = pixel_format(flat)
            request["guide"] = {"raw": write_raw(workdir, "guide.raw", read_pixels(flat, gfmt)),
                                "width": flat.get_width(), "height": flat.get_height(), "format": graw}
            loaded.delete()
        mask = selection_mask(image, layer)
        if mask is not None:
            request["mask"] = {"raw": write_raw(workdir, "mask.raw", mask), "width": width, "height": height,
                               "format": "Y8"}
        ok, message = run_engine(request, workdir)
        if not ok:
            return fail(message)
        with open(request["output"], "rb") as f:
            result = f.read()

        image.undo_group_start()
        try:
            new = Gimp.Layer.new(image, f"{layer.get_name()} ({region} transfer)", width, height,
                                 Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
            image.insert_layer(new, layer.get_parent(), image.get_item_position(layer))
            ok_off, ox, oy = layer.get_offsets()
            new.set_offsets(ox, oy)
            buffer = new.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, width, height), babl_format, result)
            buffer.flush()
            new.update(0, 0, width, height)
        finally:
            image.undo_group_end()
        Gimp.progress_end()
        Gimp.displays_flush()
        values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Layer, new))
        return values
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class AttributeTransfer(Gimp.PlugIn):
    def do_set_i18n(self, procname):
        return False

    def do_query_procedures(self):
        return [PROC_NAME]

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, attribute_transfer, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_documentation(
            "Give a face the attribute of another face",
            "Changes one attribute of the face in the current layer (mouth, eyes, brows...) to look like the "
            "guide's, keeping the person recognisable. The result is a new layer above the current one.", name)
        procedure.set_menu_label("_Attribute Transfer...")
        procedure.set_attribution("face-attribute-transfer", "face-attribute-transfer", "2026")
        procedure.add_menu_path("<Image>/Filters/Face")
        procedure.add_layer_argument("guide-layer", "_Guide layer", "A layer (of any open image) showing a face "
                                     "with the wanted attribute", True, GObject.ParamFlags.READWRITE)
        procedure.add_file_argument("guide-file", "Guide _file", "Or an image file with the guide face",
                                    Gimp.FileChooserAction.OPEN, True, None, GObject.ParamFlags.READWRITE)
        regions = Gimp.Choice.new()
        for i, (nick, label) in enumerate(REGIONS):
            regions.add(nick, i, label, "")
        procedure.add_choice_argument("region", "_Region", "Face region to change (or the selection)",
                                      regions, "mouth", GObject.ParamFlags.READWRITE)
        procedure.add_double_argument("strength", "_Strength", "How far towards the guide (0..2)",
                                      0.0, 2.0, 1.0, GObject.ParamFlags.READWRITE)
        procedure.add_int_argument("iterations", "_Iterations", "Optimisation steps (more: slower, closer)",
                                   0, 2000, 60, GObject.ParamFlags.READWRITE)
        procedure.add_int_argument("face-index", "_Face", "Which face when there are several (-1: largest)",
                                   -1, 50, -1, GObject.ParamFlags.READWRITE)
        devices = Gimp.Choice.new()
        for i, (nick, label) in enumerate(DEVICES):
            devices.add(nick, i, label, "")
        procedure.add_choice_argument("device", "_Device", "Where to compute", devices, "auto",
                                      GObject.ParamFlags.READWRITE)
        procedure.add_int_argument("seed", "S_eed", "Random seed (results are reproducible)", 0, 2**31 - 1, 0,
                                   GObject.ParamFlags.READWRITE)
        procedure.add_string_argument("backbone", "_Backbone", "vggface, dlib-resnet, or empty for the best "
                                      "installed", "", GObject.ParamFlags.READWRITE)
        procedure.add_layer_return_value("layer", "Layer", "The new layer with the result", False,
                                         GObject.ParamFlags.READWRITE)
        return procedure


Gimp.main(AttributeTransfer.__gtype__, sys.argv)
