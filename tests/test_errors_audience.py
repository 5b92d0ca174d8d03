"""Error messages in their reader's words: command-line flags for the CLI, the dialog's labels for GIMP,
from one message per error (option references worded by the options schema)."""

from __future__ import annotations

import pytest

from engine.errors import EXIT_NO_FACE, EXIT_USAGE, FATError, arg_ref, describe_failure, image_ref, option_ref, render
from engine.face.detect import choose_face
from engine.models.backbone import install_hint
from engine.options import EditOptions


def both(exc: FATError) -> tuple[str, str]:
    return describe_failure(exc)[1], describe_failure(exc, audience="gimp")[1]


def test_an_option_reference_reads_as_a_flag_or_as_the_dialog_label():
    text = f"try {option_ref('detector', 'cnn')} or {option_ref('device', 'cpu')}; {option_ref('strength')}"
    assert render(text) == "try --detector cnn or --device cpu; --strength"
    assert render(text, "gimp") == "try Detector: CNN or Device: CPU; Strength"
    assert render(option_ref("overrides"), "cli") == "--set"  # a flag named in the schema
    with pytest.raises(ValueError):
        render(text, "martian")


def test_no_face_names_the_detector_and_the_image_in_each_audience():
    with pytest.raises(FATError) as info:
        choose_face([], what=image_ref("reference"))
    cli, gimp = both(info.value)
    assert info.value.exit_code == EXIT_NO_FACE
    assert "(or try --detector cnn)" in cli and str(info.value) == cli
    assert "(or try Detector: CNN)" in gimp and "--" not in gimp
    # a GIMP user edits a layer: "reference" is the command line's word (found in a real GIMP window)
    assert cli.startswith("no face found in the reference photo.")
    assert gimp.startswith("no face found in the selected layer.")
    assert render(image_ref("guide"), "gimp") == "guide layer or file"
    assert render(image_ref("reference"), "recipe") == "photo"
    with pytest.raises(ValueError):
        image_ref("background")


def test_option_checks_speak_gimp():
    with pytest.raises(FATError) as info:
        EditOptions(strength=-1.0).validate()
    cli, gimp = both(info.value)
    assert info.value.exit_code == EXIT_USAGE
    assert cli.startswith("--strength -1") and "need --attribute" in cli
    assert gimp.startswith("Strength -1") and "need Attribute" in gimp and "--" not in gimp
    with pytest.raises(FATError) as info:
        EditOptions(iterations=99999).validate()
    assert both(info.value) == ("--iterations 99999: must be between 0 and 5000.",
                                "Iterations 99999: must be between 0 and 5000.")


def test_device_and_precision_messages_speak_gimp(monkeypatch):
    import torch

    from engine.models import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FATError) as info:
        runtime.resolve_device("cuda")
    cli, gimp = both(info.value)
    assert "--device cuda was asked for" in cli and "use --device cpu" in cli
    assert "Device: CUDA GPU was asked for" in gimp and "Device: CPU" in gimp and "--" not in gimp


def test_a_missing_vggface_says_how_to_get_its_weights():
    hint = install_hint("models/vggface.json")
    assert "python3 install.py --weights FILE" in hint and "download" in hint
    assert "export --dlib" not in hint
    assert render(hint, "gimp").endswith("or use Backbone: dlib-resnet.")
    assert "python3 install.py" in install_hint("models/dlib-resnet.json")


def test_an_internal_error_stays_one_line_in_both_audiences():
    code, message = describe_failure(RuntimeError("boom"), audience="gimp")
    assert code == 70 and "internal error (RuntimeError: boom)" in message and "\n" not in message


def test_the_python_api_names_its_keywords_not_the_command_lines_flags(tmp_path):
    """A script calling engine.edit(..., strength=9) was told "--strength 9.0" (a user trial): the public API's
    errors name its keywords. The same errors on the command line keep the flags."""
    import engine
    from engine.api import edit as internal_edit
    from tests.conftest import EXAMPLES

    ref, guide = str(EXAMPLES / "biden_1.jpg"), str(EXAMPLES / "obama_1.jpg")
    cases = [(lambda: engine.edit(ref, guide=guide, strength=9), "strength 9"),
             (lambda: engine.edit(ref), "a guide image is needed (guide=)"),
             (lambda: engine.edit(ref, guide=guide, attribute="smiling"), "(guide=) or an attribute (attribute)"),
             (lambda: engine.edit(ref, guide=guide, overrides={"nope": 1.0}), "overrides nope: unknown name"),
             (lambda: engine.edit(ref, guide=guide, box=(5, 5, 1, 1)), "box=5 5 1 1: needs left < right"),
             (lambda: engine.edit(ref, guide=guide, region="selection"), "needs a mask image (mask=)"),
             (lambda: engine.edit_strengths(ref, [9.0], attribute="smiling"), "strength 9")]
    for call, words in cases:
        with pytest.raises(FATError) as info:
            call()
        assert words in str(info.value) and "--" not in str(info.value), str(info.value)
        assert info.value.exit_code == EXIT_USAGE
    with pytest.raises(FATError) as info:  # inside the engine (the CLI, GIMP's bridge, batches): its own wording
        internal_edit(ref, guide=guide, overrides={"nope": 1.0})
    assert str(info.value).startswith("--set nope: unknown name")
    assert render(arg_ref("mask"), "gimp") == "a selection" and render(arg_ref("guide")) == "--guide"
    with pytest.raises(ValueError):
        arg_ref("reference")
