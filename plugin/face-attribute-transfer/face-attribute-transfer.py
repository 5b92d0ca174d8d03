#!/usr/bin/env python3
# face-attribute-transfer: GIMP 3 plug-in.
#
# Filters > Face > Attribute Transfer... gives the current layer's face the
# attribute (mouth, eyes, brows...) of a guide layer, a guide file, or an
# attribute bank (no guide photo), keeping the person's identity. GIMP's Python
# has no torch, so the work is done by the engine in the project's .venv, started
# as a subprocess; pixels travel as raw files in a private temporary folder,
# progress as JSON lines. The result is a new layer on top of the photo (and of
# the guide, when the guide is a layer beside it), in one undo step; on error
# nothing is added and the error is returned once, in the dialog's words.

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

PROC_NAME = "plug-in-face-attribute-transfer"
HELP_DOMAIN = "face-attribute-transfer"
AUTOMATIC = "automatic"  # the choice entry (or, for numbers, low - 1) that stands for an option's None
TEMP_PREFIX = "fat-gimp-"  # + the plug-in's pid: a folder whose process died (GIMP's Cancel kills us) is swept
MAX_FACE_CHOICE = 9
CLOSED = "The photo's image or layer was closed while the engine ran; nothing was added."
RESERVED_MNEMONICS = "hrcols"  # the dialog's buttons: _Help, _Reset, _Cancel, _OK, _Load/_Save Settings
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import engine_process  # noqa: E402  (beside this file: the gi-free subprocess part)
from advice_memory import fresh_advice  # noqa: E402  (beside this file, gi-free: advice said once)
from neighbours import RESULT_NAME, neighbour_index  # noqa: E402  (beside this file, gi-free: the guide beside)


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
    """The engine's options schema, request format, errors and temp folders: standard-library modules, so GIMP's Python
    imports them from the project itself and the dialog can never drift from the engine."""
    if project not in sys.path:
        sys.path.insert(0, project)
    from engine import errors, options
    from engine.frontends import protocol
    from engine.io import scratch

    return options, protocol, errors, scratch


OPTIONS, PROTOCOL, ERRORS, SCRATCH = engine_modules(engine_command()[1])
SCHEMA = {o["name"]: o for o in OPTIONS.schema()}


# ---- what the dialog offers: the schema, filtered to what this machine has ----

def models_dir():
    return os.environ.get("FAT_MODELS_DIR") or os.path.join(engine_command()[1], "models")


def installed_backbones():
    """The schema's backbones whose exported files are in the models folder (a missing one cannot be chosen)."""
    folder = models_dir()
    return [b for b in SCHEMA["backbone"]["choices"]
            if all(os.path.exists(os.path.join(folder, f"{b}.{ext}")) for ext in ("json", "onnx"))]


def gpu_present():
    """An NVIDIA driver is loaded (checked without torch, which GIMP's Python does not have)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def offered_choices(o):
    """The schema's choices this machine can run: installed backbones only, CUDA only with a GPU."""
    if o["name"] == "backbone":
        return installed_backbones()
    if o["name"] == "device" and not gpu_present():
        return [c for c in o["choices"] if not c.startswith("cuda")]
    return list(o["choices"])


def face_choices():
    """Face as words: automatic (the largest, or the one under the selection), then 1 (largest), 2, ..."""
    return [(AUTOMATIC, "Largest, or the one under the selection")] + [
        (str(n), f"{n} (largest)" if n == 1 else f"{n} ({n}th largest)" if n > 3 else
         f"{n} ({'second' if n == 2 else 'third'} largest)") for n in range(1, MAX_FACE_CHOICE + 1)]


GUIDE_SOURCES = [("layer", "A layer (Guide layer)"), ("file", "An image file (Guide file)"),
                 ("attribute", "No guide: an attribute (Attribute)")]


def schema_options():
    """The schema's options the dialog shows, as (GIMP property name, schema record); main ones first."""
    shown = [o for o in OPTIONS.schema() if o["gimp"]]
    return [(o["name"].replace("_", "-"), o) for o in shown if not o["advanced"]] + [
        (o["name"].replace("_", "-"), o) for o in shown if o["advanced"]]


def own_labels():
    """The plug-in's own arguments (and the Advanced group), in dialog order, with their wished mnemonics."""
    return {"guide-source": "_Guide", "guide-layer": "Guide _layer", "guide-file": "Guide f_ile",
            "attribute": SCHEMA["attribute"]["label"], "bank-file": "_Bank (none: the default)",
            "preview": "_Quick preview (composite only, a second or two)"}


def assign_mnemonics(labels, reserved=RESERVED_MNEMONICS):
    """A different Alt+key for every label (none of the dialog's buttons' either), by a bipartite matching of
    labels to the letters they contain: first come, first served (its wished letter after '_', else its earliest
    free one), then augmenting paths for the labels left without. First come, first served alone left four
    Advanced labels with none (GIMP logged "no mnemonic for property optimizer", seed, precision, detector)
    while other labels held letters they could spare. A label none of whose letters is left keeps none."""
    choices = {}
    for key, label in labels.items():
        plain = label.replace("_", "")
        wished = [label.index("_")] if "_" in label else []
        order = wished + [i for i, ch in enumerate(plain) if ch.isalpha() and i not in wished]
        choices[key] = [(i, plain[i].lower()) for i in order if plain[i].lower() not in reserved]
    holder = {}  # letter -> label key

    def place(key, seen):  # Kuhn's augmenting path: take a free letter, or move its holder to another
        for _, letter in choices[key]:
            if letter in seen:
                continue
            seen.add(letter)
            if letter not in holder or place(holder[letter], seen):
                holder[letter] = key
                return True
        return False

    for key in labels:  # first come, first served: the dialog's first labels keep their wished letters
        letter = next((letter for _, letter in choices[key] if letter not in holder), None)
        if letter:
            holder[letter] = key
    for key in labels:  # then each label left without one takes a letter another label can spare
        if key not in holder.values():
            place(key, set())
    letter_of = {key: letter for letter, key in holder.items()}
    out = {}
    for key, label in labels.items():
        plain = label.replace("_", "")
        pos = next((i for i, letter in choices[key] if letter == letter_of.get(key)), None)
        out[key] = plain if pos is None else plain[:pos] + "_" + plain[pos:]
    return out


def dialog_order():
    """Property names (and the Advanced group) in the order the dialog shows them."""
    main = ["guide-source", "guide-layer", "guide-file", "attribute", "bank-file"]
    main += [p for p, o in schema_options() if not o["advanced"]] + ["preview", "advanced"]
    return main, [p for p, o in schema_options() if o["advanced"]]


def all_labels():
    own = own_labels()
    schema = dict(schema_options())
    main, advanced = dialog_order()
    wished = {p: own.get(p) or (schema[p]["label"] if p in schema else "_Advanced") for p in main + advanced}
    return assign_mnemonics(wished)


LABELS = all_labels()


def add_choice(procedure, prop, label, help_text, entries, default):
    choice = Gimp.Choice.new()
    for i, (nick, text) in enumerate(entries):
        choice.add(nick, i, text, "")
    procedure.add_choice_argument(prop, label, help_text, choice, default, GObject.ParamFlags.READWRITE)


def add_option_argument(procedure, prop, o):
    label, help_text = LABELS[prop], o["gimp_help"]
    flags = GObject.ParamFlags.READWRITE
    if o["name"] == "face":
        add_choice(procedure, prop, label, "Which face to edit when the photo has several (numbered by size)",
                   face_choices(), AUTOMATIC)
    elif o["choices"]:
        entries = ([(AUTOMATIC, "Automatic")] if o["optional"] else []) + [
            (c, o["labels"][c]) for c in offered_choices(o)]
        add_choice(procedure, prop, label, help_text, entries, o["default"] or AUTOMATIC)
    elif o["type"] == "int":
        low = o["low"] - 1 if o["optional"] else o["low"]
        if o["optional"]:
            help_text += f" ({low}: automatic)"
        default = low if o["default"] is None else o["default"]
        procedure.add_int_argument(prop, label, help_text, int(low), int(o["high"]), default, flags)
    elif o["type"] == "float":  # strength: below 0 only with Guide = attribute (checked with the schema's rule)
        procedure.add_double_argument(prop, label, help_text, o["low"], o["high"], o["default"], flags)
    else:
        raise ValueError(f"option {o['name']}: no GIMP argument for type {o['type']}")


def option_values(config):
    """The dialog's values as engine option names (None where GIMP holds the 'automatic' stand-in)."""
    values = {}
    for prop, o in schema_options():
        value = config.get_property(prop)
        if o["name"] == "face":
            values["face"] = None if value == AUTOMATIC else int(value) - 1  # 1 = largest = engine index 0
            continue
        automatic = value == AUTOMATIC if o["choices"] else o["optional"] and value < o["low"]
        values[o["name"]] = None if automatic else value
    if config.get_property("preview"):
        values["iterations"] = 0  # the composite start alone
    if config.get_property("guide-source") == "attribute":
        values["attribute"] = config.get_property("attribute")
        bank = config.get_property("bank-file")  # none: the engine's default bank for the backbone used
        if bank is not None and bank.get_path():
            values["bank"] = bank.get_path()
    return values


# ---- pixels ----

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


# ---- the private temp folder, swept when its plug-in died ----

def request_folder_parent():
    """The system temp folder (None); inside a Flatpak sandbox the service folder, which the sandbox shares with
    a service running on the host, so that it can read the request (README: The warm engine)."""
    try:
        from engine.frontends import service_client

        return service_client.request_parent()
    except (ImportError, OSError):
        return None


def make_workdir():
    """A private (0700) request folder named after this process; first, ours whose process died are removed: GIMP's
    Cancel kills the plug-in before its own cleanup runs, which would leave raw copies of the user's photos."""
    parent = request_folder_parent()
    SCRATCH.sweep(Path(parent or tempfile.gettempdir()), TEMP_PREFIX)
    return str(SCRATCH.make_dir(TEMP_PREFIX, parent))


# ---- the engine ----

def timeline(event):
    """Tests and benchmarks: when each step happened (FAT_PLUGIN_TIMELINE names the file), e.g. how long after
    OK the optimisation starts on a warm engine."""
    path = os.environ.get("FAT_PLUGIN_TIMELINE")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f}\t{event}\n")


def progress_text(text):
    Gimp.progress_set_text(text)
    timeline(text)
    log = os.environ.get("FAT_PLUGIN_PROGRESS_LOG")  # tests: what the progress bar said, in order
    if log:
        with open(log, "a") as f:
            f.write(text + "\n")


def run_engine(request, workdir):
    """Run the engine, driving GIMP's progress bar with its stages and steps; returns (ok, message, notes, advice):
    notes are what the user should know about a result (an attribute with nothing to take away), advice about the
    setup (a bank with few examples), said once."""
    python, project = engine_command()
    request_path = os.path.join(workdir, "request.json")
    with open(request_path, "w") as f:
        json.dump(request, f)

    def on_progress(step, total):
        Gimp.progress_update(min(1.0, float(step) / total))
        progress_text(f"Optimising {min(step, total)}/{total}")

    def on_stage(text):
        progress_text(text)

    progress_text("Handing the photo to the engine")  # at once after OK; the engine's own stages follow
    ok, message, done = engine_process.run_engine_process(python, project, request_path, on_progress, on_stage)
    return ok, message, list((done or {}).get("notes") or []), list((done or {}).get("advice") or [])


# ---- the guide: which source, remembered between runs ----

def guide_memory(layer):
    """The guide layer in words GIMP can save with the last values (a layer object cannot be serialised)."""
    image = layer.get_image()
    file = image.get_file() if image else None
    return json.dumps({"id": layer.get_id(), "name": layer.get_name(), "image": file.get_path() if file else ""})


def read_memory(text):
    try:
        memory = json.loads(text or "{}")
    except ValueError:
        return {}
    return memory if isinstance(memory, dict) else {}


def remembered_name(text):
    return str(read_memory(text).get("name") or "")


def remembered_guide(text):
    """The layer `guide_memory` described: the same layer if still open, else a layer of that name in an open
    image loaded from the same file (after GIMP restarted), else None."""
    memory = read_memory(text)
    if not memory.get("name"):
        return None
    layer = Gimp.Layer.get_by_id(int(memory.get("id", -1)))
    if layer is not None and layer.is_valid() and layer.get_name() == memory["name"]:
        return layer
    for image in Gimp.get_images():
        file = image.get_file()
        if memory.get("image") and file is not None and file.get_path() == memory["image"]:
            found = image.get_layer_by_name(memory["name"])
            if found is not None:
                return found
    return None


def neighbour_guide(image, layer):
    """A sensible guide to preselect: the active layer of another open image, else the nearest layer above (or
    below) the photo in its own stack that is not one of this plug-in's results (neighbours.py)."""
    for other in Gimp.get_images():
        if other.get_id() != image.get_id():
            selected = other.get_selected_layers() or other.get_layers()
            if selected:
                return selected[0]
    parent = layer.get_parent()
    siblings = parent.get_children() if parent else image.get_layers()
    index = next((i for i, s in enumerate(siblings) if s.get_id() == layer.get_id()), None)
    if index is None:
        return None
    found = neighbour_index([s.get_name() if isinstance(s, Gimp.Layer) else None for s in siblings], index)
    return None if found is None else siblings[found]


def preselect_guide(config, image, layer, run_mode):
    """Before the dialog (and for Filters > Repeat): the remembered guide, else (dialog only) a neighbour."""
    if config.get_property("guide-layer") is not None:
        return
    guide = remembered_guide(config.get_property("guide-memory"))
    if guide is None and run_mode == Gimp.RunMode.INTERACTIVE:
        guide = neighbour_guide(image, layer)
    if guide is not None:
        config.set_property("guide-layer", guide)


def chosen_guide(config, layer):
    """(guide drawable or file or None, error message or None) by the Guide choice: exactly one source counts,
    so a stale file name never hides behind a chosen layer (and vice versa)."""
    source = config.get_property("guide-source")
    if source == "attribute":
        return None, None
    if source == "file":
        file = config.get_property("guide-file")
        if file is None or not file.get_path() or not os.path.isfile(file.get_path()):
            return None, "Guide is set to an image file, but no readable Guide file is chosen."
        return file, None
    guide = config.get_property("guide-layer")
    if guide is None or not guide.is_valid():
        name = remembered_name(config.get_property("guide-memory"))
        if name:
            return None, (f"The last guide layer \"{name}\" is no longer open: choose a Guide layer in "
                          "Filters > Face > Attribute Transfer....")
        return None, ("Choose a Guide layer (a face with the wanted attribute, in any open image), or set Guide to "
                      "an image file or to an attribute.")
    if guide.get_id() == layer.get_id():
        return None, "The Guide layer is the photo itself: choose the layer with the other face."
    return guide, None


def guide_pixels(guide, workdir):
    """The guide as a raw file: a layer is read as it is; a file is opened, flattened, read and closed."""
    loaded = None
    if isinstance(guide, Gio.File):
        loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, guide)
        guide = loaded.flatten()
    try:
        fmt, raw = pixel_format(guide)
        return PROTOCOL.raw_image(write_raw(workdir, "guide.raw", read_pixels(guide, fmt)), guide.get_width(),
                                  guide.get_height(), raw)
    finally:
        if loaded is not None:
            loaded.delete()


# ---- the result ----

def result_name(layer, options):
    """'<photo> (<region> transfer)', or '<photo> (<signed strength> <attribute> transfer)' for an attribute-bank
    edit (a smile added, +1, and one taken away, -1, are told apart in the Layers dock, whose default width shows
    about 15 characters: the sign comes first), from the photo's own name
    (a result's suffix is not repeated; a label's own parenthesis, 'Smile (mouth and cheeks)', is left out, or the
    names nested)."""
    base = RESULT_NAME.sub("", layer.get_name())
    attribute = options.get("attribute")
    if attribute:
        label = SCHEMA["attribute"]["labels"].get(attribute, attribute)
    else:
        region = OPTIONS.resolved_region(options["region"], None)
        label = SCHEMA["region"]["labels"].get(region, region)
    what = label.split(" (")[0].lower()
    if attribute:
        what = f"{float(options['strength']):+g} {what}"
    return f"{base} ({what} {'preview' if options['iterations'] == 0 else 'transfer'})"


def result_position(layer):
    """(parent, position): the top of the photo's own stack, over the guide and over earlier results (a result
    put just above the photo stayed hidden under the previous one): the canvas must show it."""
    return layer.get_parent(), 0


def add_result(image, layer, options, data, babl_format):
    """The result as a new layer in one undo step; the photo stays the selected layer for the next run."""
    width, height = layer.get_width(), layer.get_height()
    image.undo_group_start()
    try:
        # (in a grayscale image GIMP makes the RGBA layer gray when it is inserted)
        new = Gimp.Layer.new(image, result_name(layer, options), width, height, Gimp.ImageType.RGBA_IMAGE, 100.0,
                             Gimp.LayerMode.NORMAL)
        parent, position = result_position(layer)
        image.insert_layer(new, parent, position)
        ok_off, ox, oy = layer.get_offsets()
        new.set_offsets(ox, oy)
        buffer = new.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, width, height), babl_format, data)
        buffer.flush()
        new.update(0, 0, width, height)
        image.set_selected_layers([layer])
    finally:
        image.undo_group_end()
    return new


def test_hook(image, layer):
    """Tests only: act as a user closing the image (or deleting the layer) while the engine ran; the file named
    by FAT_PLUGIN_TEST_HOOK says which."""
    path = os.environ.get("FAT_PLUGIN_TEST_HOOK")
    if not path or not os.path.isfile(path):
        return
    with open(path) as f:
        hook = f.read().strip()
    if hook == "delete-image":
        image.delete()
    elif hook == "delete-layer":
        image.remove_layer(layer)


# ---- the procedure ----

def follow_guide_source(dialog):
    """Only the chosen guide source's field is editable (a file name left in Guide file greys out while Guide
    says a layer), so the dialog shows which one counts."""
    for prop, source in (("guide-layer", "layer"), ("guide-file", "file"), ("attribute", "attribute"),
                         ("bank-file", "attribute")):
        values = Gimp.ValueArray.new(1)
        values.append(GObject.Value(GObject.TYPE_STRING, source))
        try:
            dialog.set_sensitive_if_in(prop, None, "guide-source", values, True)
        except (TypeError, AttributeError, GLib.Error) as e:  # an older libgimpui: the fields stay editable
            print(f"face-attribute-transfer: cannot link {prop} to the guide source: {e}", file=sys.stderr)


def show_dialog(procedure, config):
    """The dialog: guide and main options first, expert settings in a collapsed Advanced group."""
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(PROC_NAME)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config)
    main, advanced = dialog_order()
    dialog.fill_box("advanced-box", advanced)
    dialog.get_label("advanced-label", LABELS["advanced"], False, True)
    dialog.fill_expander("advanced", "advanced-label", False, "advanced-box")
    dialog.fill(main)
    follow_guide_source(dialog)
    ok = dialog.run()
    dialog.destroy()
    return ok


def error_values(procedure, message):
    """The error returned once: GIMP shows it to an interactive user; no extra Gimp.message."""
    Gimp.progress_end()
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(
        GLib.quark_from_string("face-attribute-transfer"), message, 0))


def checked_options(config, has_mask):
    """The options as the engine will check them, checked here first so a mistake answers at once, in the
    dialog's words; returns (options, error message)."""
    values = option_values(config)
    bank = config.get_property("bank-file") if config.get_property("guide-source") == "attribute" else None
    if bank is not None and not bank.get_path():  # (a remote file: never the default bank in its place)
        return values, ("The chosen Bank is not a file on this computer: copy it here and choose it again, or "
                        "choose none for the default bank.")
    try:
        OPTIONS.EditOptions.from_mapping(dict(values))
    except ERRORS.FATError as e:
        return values, e.for_audience("gimp")
    if values["region"] == "selection" and not has_mask:  # (any other region: a selection picks the face)
        return values, ("Region is Selection, but the image has no selection over this layer: select the area to "
                        "edit, or choose another Region.")
    return values, None


def attribute_transfer(procedure, run_mode, image, drawables, config, data):
    layer = drawables[0] if len(drawables) == 1 and isinstance(drawables[0], Gimp.Layer) else None
    if layer is not None and run_mode != Gimp.RunMode.NONINTERACTIVE:
        preselect_guide(config, image, layer, run_mode)
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    timeline("run started")  # after OK in the dialog
    if layer is None:
        return error_values(procedure, "Select exactly one layer (the photo to edit).")
    guide, problem = chosen_guide(config, layer)
    if problem:
        return error_values(procedure, problem)
    mask = selection_mask(image, layer)
    options, problem = checked_options(config, mask is not None)
    if problem:
        return error_values(procedure, problem)
    if isinstance(guide, Gimp.Layer):
        config.set_property("guide-memory", guide_memory(guide))  # saved with the last values (Repeat, Re-Show)
    workdir = make_workdir()
    try:
        Gimp.progress_init("Face attribute transfer")
        babl_format, raw_format = pixel_format(layer)
        width, height = layer.get_width(), layer.get_height()
        reference = PROTOCOL.raw_image(write_raw(workdir, "reference.raw", read_pixels(layer, babl_format)), width,
                                       height, raw_format)
        guide_raw = guide_pixels(guide, workdir) if guide is not None else None
        mask_raw = PROTOCOL.raw_image(write_raw(workdir, "mask.raw", mask), width, height, "Y8") if mask else None
        request = PROTOCOL.make_request(reference, guide_raw, os.path.join(workdir, "result.raw"), options,
                                        mask_raw)
        ok, message, notes, advice = run_engine(request, workdir)
        test_hook(image, layer)
        if not ok:
            return error_values(procedure, message)
        if not image.is_valid() or not layer.is_valid():
            return error_values(procedure, CLOSED)
        with open(request["output"], "rb") as f:
            result = f.read()
        try:
            new = add_result(image, layer, options, result, babl_format)
        except (TypeError, GLib.Error):  # GIMP refused the closed image's calls (Layer.new returns NULL)
            return error_values(procedure, CLOSED)
        Gimp.progress_end()
        Gimp.displays_flush()
        fresh, told = fresh_advice(advice, config.get_property("advice-given"))
        config.set_property("advice-given", told)  # saved with the last values: a bank's advice is said once
        for note in notes + fresh:  # e.g. nothing to take away: the layer looks like the photo, and why
            Gimp.message(note)
        values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Layer, new))
        return values
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


HELP = ("Changes one attribute of the face in the current layer (mouth, eyes, brows, smile...) to look like the "
        "guide's, keeping the person recognisable. Guide: a layer of any open image (preselected: another open "
        "image, or the layer above the photo), an image file, or no guide at all: an attribute (smiling, mouth "
        "open...) taken from the attribute bank, whose strength may be negative to remove it. Region 'Selection' "
        "edits exactly the selected area (a hard-edged selection is faded in inside its outline); any selection "
        "also picks which face. Preview runs the composite alone (a second or two). The result is a new layer on "
        "top of the photo (and of a guide layer above it), in one undo step; the photo stays selected.")


def add_arguments(procedure):
    """The plug-in's own arguments (guide, attribute, preview, the remembered guide) and the schema's options."""
    flags = GObject.ParamFlags.READWRITE
    add_choice(procedure, "guide-source", LABELS["guide-source"], "Where the wanted attribute comes from",
               GUIDE_SOURCES, "layer")
    procedure.add_layer_argument("guide-layer", LABELS["guide-layer"], "A layer (of any open image) showing a face "
                                 "with the wanted attribute", True, flags)
    procedure.add_file_argument("guide-file", LABELS["guide-file"], "An image file with the guide face",
                                Gimp.FileChooserAction.OPEN, True, None, flags)
    a = SCHEMA["attribute"]
    add_choice(procedure, "attribute", LABELS["attribute"], a["help"], [(c, a["labels"][c]) for c in a["choices"]],
               a["choices"][0])
    procedure.add_file_argument("bank-file", LABELS["bank-file"], "The attribute bank whose example faces give the "
                                "attribute (a .npz file made by python -m engine bank build from your own photos); "
                                "none: the default bank of the backbone used (models/bank-BACKBONE.npz, which "
                                "install.py builds from the project's examples)", Gimp.FileChooserAction.OPEN, True,
                                None, flags)
    for prop, o in schema_options():
        add_option_argument(procedure, prop, o)
    procedure.add_boolean_argument("preview", LABELS["preview"], "Only the blended start image (no optimisation): "
                                   "a quick look before the full run", False, flags)
    procedure.add_string_aux_argument("guide-memory", "Remembered guide", "The last guide layer (id, name, file)",
                                      "", flags)
    procedure.add_string_aux_argument("advice-given", "Advice given", "Remarks about the setup already shown once "
                                      "(JSON list of texts)", "", flags)


class AttributeTransfer(Gimp.PlugIn):
    def do_set_i18n(self, procname):
        return False

    def do_query_procedures(self):
        help_dir = os.path.join(HERE, "help")
        if not os.path.isdir(help_dir):  # installed copies hold only the .py files: the project has the pages
            help_dir = os.path.join(engine_command()[1], "plugin", "face-attribute-transfer", "help")
        self.set_help_domain(HELP_DOMAIN, Gio.File.new_for_path(help_dir))
        return [PROC_NAME]

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, attribute_transfer, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_documentation("Give a face the attribute of another face", HELP, name)
        procedure.set_menu_label("_Attribute Transfer...")
        procedure.set_attribution("face-attribute-transfer", "face-attribute-transfer", "2026")
        procedure.add_menu_path("<Image>/Filters/Face")
        add_arguments(procedure)
        procedure.add_layer_return_value("layer", "Layer", "The new layer with the result", False,
                                         GObject.ParamFlags.READWRITE)
        return procedure


Gimp.main(AttributeTransfer.__gtype__, sys.argv)
