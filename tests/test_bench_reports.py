"""The benchmark reports say what their numbers mean (bench/ is run by hand; its arithmetic is tested here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.bank_quality import judged_pair, report
from engine.frontends.bench import roofline


def _record(task: str, happy: tuple[float, float], open68: tuple[float, float], mobileface: float) -> dict:
    return {"task": task, "ref": "r.jpg", "happy": list(happy), "open68": list(open68), "mobileface": mobileface,
            "seconds": 1.0, "pixels_from": ["e.jpg"]}


def test_the_bank_report_counts_only_the_references_the_judge_reads_as_able_to_change(capsys):
    """A reference labelled non-smiling that the judge already reads happy cannot rise by 0.5: the report gives the
    best count possible beside the plain one (4 of 15 such faces in ../shared/faces cap smiling at 73 %)."""
    report([_record("smiling", (0.0, 0.9), (0.0, 0.1), 0.8), _record("smiling", (0.1, 0.3), (0.0, 0.0), 0.7),
            _record("smiling", (0.9, 1.0), (0.0, 0.0), 0.8),  # already happy: cannot count
            _record("mouth_open", (0.0, 0.0), (0.01, 0.12), 0.8), _record("mouth_open", (0.0, 0.0), (0.07, 0.2), 0.8)])
    out = capsys.readouterr().out
    assert "happy +0.5 (goal >= 80 %): 1/3 = 33 %; mobileface >= 0.75 (goal >= 90 %): 2/3 = 67 %" in out
    assert "of the 2 the judge reads as able to change before the edit: 1/2 = 50 % (at most 2/3 = 67 % of all)" in out
    assert "mouth_open < 0.05 -> > 0.08 (goal >= 80 %): 1/2 = 50 %" in out
    assert "of the 1 the judge reads as able to change before the edit: 1/1 = 100 % (at most 1/2 = 50 % of all)" in out


def test_the_judges_see_the_edited_face_of_a_group_photo_and_the_whole_of_a_portrait(tmp_path):
    """The judges compare the largest face they find: in a group photo that can be someone the edit left alone
    (obama_biden_group measured nothing). Both images are cut to the same square around the face the engine edits;
    a one-face photo is judged whole."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    group = examples / "obama_biden_group.jpg"
    result = tmp_path / "edit.png"  # the engine writes PNG
    Image.open(group).save(result)
    ref, edit = judged_pair(group, result, tmp_path / "judged")
    assert ref.parent == edit.parent == tmp_path / "judged" and ref != edit
    with Image.open(group) as whole, Image.open(ref) as a, Image.open(edit) as b:
        assert a.size == b.size and a.width < whole.width / 2
        assert np.array_equal(np.asarray(a), np.asarray(b))
    portrait = examples / "biden_1.jpg"
    assert judged_pair(portrait, portrait, tmp_path / "one") == (portrait, portrait.resolve())
    assert not (tmp_path / "one").exists()


def test_the_roofline_takes_each_layer_at_its_arithmetic_or_its_weight_reading_whichever_is_longer():
    """A convolution (many multiply-adds per weight) is compute-bound; one image through a fully connected layer
    reads each weight once for one multiply-add: memory-bound. Forward + input gradient: each layer twice."""
    conv, dense = (1e9, 1e6), (1e8, 1e8)  # (multiply-adds, weights)
    r = roofline([conv, dense], peak_gflops=400, bandwidth_gbs=20, element_bytes=2)
    compute = 2 * (2e9 / 400e9 + 2e8 / 400e9)
    assert r["compute_only_s"] == pytest.approx(compute)
    assert r["roofline_s"] == pytest.approx(2 * (2e9 / 400e9 + 2e8 / 20e9))  # the dense layer at 200 MB / 20 GB/s
    assert r["weights_mb"] == pytest.approx(2 * (1e6 + 1e8) / 1e6)


def test_an_evaluations_time_is_the_median_gap_between_the_optimisers_reports():
    """The bench's time per optimiser evaluation (against its roofline) leaves out the work before the evaluations
    (the targets' passes, the start) and the first evaluation's own set-up (the windowed pass's stored maps): the
    median gap between consecutive reports; a count reported twice (a stage's last report) counts once."""
    from engine.frontends.bench import evaluation_times

    median, spent = evaluation_times([(1, 1.0), (2, 1.1), (3, 1.2), (4, 1.35), (4, 1.4)])
    assert median == pytest.approx(0.1) and spent == pytest.approx(0.35)
    assert evaluation_times([(1, 1.0), (3, 1.3)])[0] == pytest.approx(0.15)  # two evaluations between reports
    assert evaluation_times([(1, 2.0)]) == (None, 0.0)  # one evaluation: no figure (JSON null, not NaN)
