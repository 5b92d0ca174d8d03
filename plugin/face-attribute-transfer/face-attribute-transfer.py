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
AUTOMATIC = "automatic"  # the choice entry (or, for numbers, low - 1) that stands for an option's None
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


def engine_modules(project):
    """The engine's options schema and request format: standard-library modules, so GIMP's Python imports
    them from the project itself and the dialog can never drift from the engine."""
    if project not in sys.path:
        sys.path.insert(0, project)
    from engine import options
    from engine.frontends import protocol

    return options, protocol


OPTIONS, PROTOCOL = engine_modules(engine_command()[1])


def gimp_options():
    """The schema's options that the dialog shows, as (GIMP property name, schema record)."""
    return [(o["name"].replace("_", "-"), o) for o in OPTIONS.schema() if o["gimp"]]


def add_option_argument(procedure, prop, o):
    label, help_text = o["label"], o["help"]
    flags = GObject.ParamFlags.READWRITE
    if o["choices"]:
        choice = Gimp.Choice.new()
        entries = ([(AUTOMATIC, "Automatic")] if o["optional"] else []) + [(c, o["labels"][c]) for c in o["choices"]]
        for i, (nick, text) in enumerate(entries):
            choice.add(nick, i, text, "")
        procedure.add_choice_argument(prop, label, help_text, choice, o["default"] or AUTOMATIC, flags)
    elif o["type"] == "int":
        low = o["low"] - 1 if o["optional"] else o["low"]
        if o["optional"]:
            help_text += f" ({low}: automatic)"
        default = low if o["default"] is None else o["default"]
        procedure.add_int_argument(prop, label, help_text, int(low), int(o["high"]), default, flags)
    elif o["type"] == "float":
        # negative strengths remove an attribute (attribute-bank edits), which the dialog does not offer yet
        low = max(0.0, o["low"]) if o["name"] == "strength" else o["low"]
        procedure.add_double_argument(prop, label, help_text, low, o["high"], o["default"], flags)
    else:
        raise ValueError(f"option {o['name']}: no GIMP argument for type {o['type']}")


def option_values(config):
    """The dialog's values as engine option names (None where GIMP holds the 'automatic' stand-in)."""
    values = {}
    for prop, o in gimp_options():
        value = config.get_property(prop)
        automatic = value == AUTOMATIC if o["choices"] else o["optional"] and value < o["low"]
        values[o["name"]] = None if automatic else value
    return values


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
    options = option_values(config)
    region = options["region"]
    babl_format, raw_format = pixel_format(layer)

    workdir = tempfile.mkdtemp(prefix="fat-gimp-")
    os.chmod(workdir, 0o700)
    try:
        Gimp.progress_init("Face attribute transfer")
        width, height = layer.get_width(), layer.get_height()
        raw = PROTOCOL.raw_image
        reference = raw(write_raw(workdir, "reference.raw", read_pixels(layer, babl_format)), width, height,
                        raw_format)
        loaded = None
        if guide is None:  # a guide file: open it, flatten, read, close
            loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, guide_file)
            guide = loaded.flatten()
        gfmt, graw = pixel_format(guide)
        guide_raw = raw(write_raw(workdir, "guide.raw", read_pixels(guide, gfmt)), guide.get_width(),
                        guide.get_height(), graw)
        if loaded is not None:
            loaded.delete()
        mask = selection_mask(image, layer)
        if mask is not None:
            mask = raw(write_raw(workdir, "mask.raw", mask), width, height, "Y8")
        request = PROTOCOL.make_request(reference, guide_raw, os.path.join(workdir, "result.raw"), options, mask)
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
        for prop, o in gimp_options():
            add_option_argument(procedure, prop, o)
        procedure.add_layer_return_value("layer", "Layer", "The new layer with the result", False,
                                         GObject.ParamFlags.READWRITE)
        return procedure


Gimp.main(AttributeTransfer.__gtype__, sys.argv)
