"""Batch recipes: validation with line numbers, a real run over good and bad photos, resume, a Dask cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.batch.api import run_batch
from engine.batch.recipe import load_recipe
from engine.batch.tasks import plan
from engine.errors import EXIT_SOME_FAILED, EXIT_USAGE, FATError
from engine.frontends.cli import main as cli_main
from tests.conftest import EXAMPLES


def quiet(*_a) -> None:
    pass


def write(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two portraits, a group photo (two faces), a faceless picture, a truncated JPEG and a guide."""
    d = tmp_path_factory.mktemp("batch-photos")
    inputs = d / "photos"
    inputs.mkdir()
    for name, side in (("biden_2.jpg", 520), ("obama_1.jpg", 640), ("obama_biden_group.jpg", 900)):
        im = Image.open(EXAMPLES / name).convert("RGB")
        im.thumbnail((side, side))
        im.save(inputs / name)
    Image.new("RGB", (200, 150), (120, 120, 120)).save(inputs / "blank.png")
    (inputs / "corrupt.jpg").write_bytes((inputs / "obama_1.jpg").read_bytes()[:3000])
    guide = Image.open(EXAMPLES / "obama_2.jpg").convert("RGB")
    guide.thumbnail((520, 520))
    guide.save(d / "guide.jpg")
    return d


def recipe_text(models_dir: Path, out: str = "out", strengths: str = "[1.0]", extra: str = "") -> str:
    return (f'inputs = ["photos/*"]\noutput = "{out}/{{stem}}-{{strength}}.png"\nguide = "guide.jpg"\n'
            f'faces = "all"\nstrengths = {strengths}\niterations = 4\n'
            f'backbone = "{models_dir / "dlib-resnet.json"}"\n{extra}')


# --- validation: before anything runs, with the line at fault -------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\nstrenght = 1\n', 4, "unknown key"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\nstrength = 3\n', 4, "between"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\nfaces = "some"\n', 4, "faces"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "missing.jpg"\n', 3, "no such file"),
    ('inputs = ["nothing/*.jpg"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\n', 1, "matches no image"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\nstrengths = [0.5, 1]\n', 2,
     "{strength}"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.gif"\nguide = "guide.jpg"\n', 2, "unsupported type"),
    ('inputs = ["photos/*"]\noutput = "o/{face}.png"\nguide = "guide.jpg"\n', 2, "unknown placeholder"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nregion = "mouth"\n', None, "guide photo"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\n\n[[edit]]\nname = "a"\n'
     'region = "elbow"\n', 7, "region"),
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\nattribute = "smiling"\n', 3, "not both"),
    ('inputs = ["photos/*"]\noutput = "o/x.png"\nguide = "guide.jpg"\n', None, "two tasks would write"),
    ('inputs = ["photos/*"\n', None, "not valid TOML"),
    # a misspelled attribute is blamed on its own line, not on the first key checked with it (a user trial)
    ('inputs = ["photos/*"]\noutput = "o/{stem}.png"\niterations = 4\nattribute = "smilling"\n', 4, "smiling"),
    # a named photo that does not exist is a recipe error, before anything runs (it failed at run time, exit 7)
    ('inputs = ["photos/biden_2.jpg", "photos/nobody.jpg"]\noutput = "o/{stem}.png"\nguide = "guide.jpg"\n', 1,
     "no such file"),
    # {ext} comes without its dot: "{stem}{ext}" makes no image type (it failed at run time for every photo)
    ('inputs = ["photos/*.jpg"]\noutput = "o/{stem}{ext}"\nguide = "guide.jpg"\n', 2, "{stem}.{ext}"),
])
def test_recipe_errors_name_the_line(photos, text, line, words):
    path = write(photos, text, "bad.toml")
    with pytest.raises(FATError) as e:
        plan(load_recipe(path))
    assert e.value.exit_code == EXIT_USAGE
    assert words in str(e.value)
    if line is not None:
        assert f"bad.toml:{line}:" in str(e.value)


def test_the_readme_recipe_is_valid(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = re.search(r"```toml\n(# retouch.toml.*?)```", readme, re.S).group(1)
    for name in ("shoot/a.jpg", "more/x/b.png", "guides/open-mouth.jpg", "models/bank-dlib-resnet.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    tasks = plan(load_recipe(write(tmp_path, text, "retouch.toml")))
    assert [(Path(t.output).name, t.faces) for t in tasks] == [
        ("a-open-0.5.png", "all"), ("a-open-1.png", "all"), ("b-open-0.5.png", "all"), ("b-open-1.png", "all"),
        ("a-smile.png", "all"), ("b-smile.png", "all")]


def test_output_may_not_replace_an_input(photos):
    path = write(photos, 'inputs = ["photos/*"]\noutput = "photos/{stem}.{ext}"\nguide = "guide.jpg"\n', "x.toml")
    with pytest.raises(FATError, match="replace an input"):
        plan(load_recipe(path))


def test_output_may_not_replace_an_input_through_a_linked_folder(photos, tmp_path):
    """A folder reached through a symbolic link is the same folder: refused before anything runs, with the line (it
    passed the check, each photo then failed with exit 7, and the report was written into the input folder)."""
    link = tmp_path / "linked"
    link.symlink_to(photos / "photos", target_is_directory=True)
    path = write(tmp_path, f'inputs = ["{photos}/photos/*.jpg"]\nguide = "{photos}/guide.jpg"\n'
                           'output = "linked/{stem}.{ext}"\n', "x.toml")
    with pytest.raises(FATError, match="replace an input") as e:
        plan(load_recipe(path))
    assert e.value.exit_code == EXIT_USAGE and "x.toml:3:" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked", "x.toml"]


def test_edit_tables_inherit_the_top_level(photos):
    text = ('inputs = ["photos/biden_2.jpg"]\noutput = "o/{stem}-{edit}-{strength}.png"\nguide = "guide.jpg"\n'
            'iterations = 7\n\n[[edit]]\nname = "mouth"\nstrengths = [0.5, 1]\n\n[[edit]]\nname = "eyes"\n'
            'region = "eyes"\niterations = 3\n')
    tasks = plan(load_recipe(write(photos, text, "tables.toml")))
    assert [(t.edit, t.strength, t.options["iterations"], t.options.get("region")) for t in tasks] == [
        ("mouth", 0.5, 7, None), ("mouth", 1.0, 7, None), ("eyes", 1.0, 3, "eyes")]
    assert tasks[0].output.endswith("o/biden_2-mouth-0.5.png") and tasks[0].key != tasks[1].key


def test_dry_run_lists_and_does_nothing(photos, models_dir, capsys):
    path = write(photos, recipe_text(models_dir, out="dry"), "dry.toml")
    assert cli_main(["batch", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("edit  ") >= 5 and "nothing was done" in err
    assert not (photos / "dry").exists()


# --- a real run: good, faceless, corrupt and group photos; resume; a changed strength ---------------------

def outputs(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_recipe_over_a_folder_then_resume(photos, models_dir, capsys):
    path = write(photos, recipe_text(models_dir), "run.toml")
    assert cli_main(["batch", str(path), "--quiet"]) == EXIT_SOME_FAILED
    out = photos / "out"
    records = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    by_name = {Path(r["input"]).name: r for r in records}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "biden_2.jpg": "done", "obama_1.jpg": "done", "obama_biden_group.jpg": "done", "blank.png": "failed",
        "corrupt.jpg": "failed"}
    assert "no face found" in by_name["blank.png"]["error"] and by_name["blank.png"]["exit_code"] == 4
    assert "truncated" in by_name["corrupt.jpg"]["error"] and by_name["corrupt.jpg"]["exit_code"] == 3
    assert by_name["obama_biden_group.jpg"]["faces_edited"] == 2  # every face of the group photo
    for name in ("biden_2", "obama_1", "obama_biden_group"):
        r = by_name[f"{name}.jpg"]
        assert r["identity_distance"] < 0.6 and r["measure"] == "mouth_open" and r["after"] > r["before"]
        before = np.asarray(Image.open(photos / "photos" / f"{name}.jpg").convert("RGB"), np.int16)
        after = np.asarray(Image.open(out / f"{name}-1.png"), np.int16)
        assert after.shape == before.shape and np.abs(after - before).max() > 40  # edited, not copied
        assert json.loads((out / f"{name}-1.json").read_text())["batch"]["record"]["status"] == "done"
    group = np.abs(np.asarray(Image.open(out / "obama_biden_group-1.png"), np.int16) - np.asarray(
        Image.open(photos / "photos" / "obama_biden_group.jpg").convert("RGB"), np.int16)).max(axis=2)
    left, right = group[:, : group.shape[1] // 2], group[:, group.shape[1] // 2:]
    assert (left > 40).sum() > 100 and (right > 40).sum() > 100  # both faces changed
    err = capsys.readouterr().err
    assert "failed: " in err and "report:" in err and re.search(r"edit1\s+5\s+3\s+0\s+2", err)
    page = (out / "report.html").read_text()
    for src in re.findall(r'<img src="([^"]+)"', page):  # every thumbnail is there and is a picture
        with Image.open(out / src) as im:
            assert im.height <= 200 and im.width <= (404 if "/face-" in src else 200)
    assert page.count("<img ") == 4 + 3 + 3  # the befores that decode (not the corrupt one), afters, face pairs
    assert page.count("no preview") == 1 + 2  # the corrupt one's before, the two failures' afters
    assert "truncated" in page and "no face found" in page

    first = outputs(out)
    assert cli_main(["batch", str(path), "--quiet"]) == EXIT_SOME_FAILED  # the bad ones fail again
    assert outputs(out) == first  # everything finished is skipped, untouched
    statuses = [json.loads(line)["status"] for line in (out / "report.jsonl").read_text().splitlines()]
    assert statuses.count("skipped") == 3 and statuses.count("failed") == 2

    path.write_text(recipe_text(models_dir, strengths="[1.0, 0.5]"))
    records = run_batch(path, quiet=True, say=quiet).records
    assert outputs(out).items() >= first.items()  # the strength-1 outputs were not redone
    ran = sorted((Path(r["output"]).name, r["status"]) for r in records if r["status"] == "done")
    assert ran == [("biden_2-0.5.png", "done"), ("obama_1-0.5.png", "done"), ("obama_biden_group-0.5.png", "done")]


@pytest.mark.slow
def test_attribute_recipe_and_force(photos, models_dir, default_bank):
    bank = default_bank
    path = write(photos, f'inputs = ["photos/biden_2.jpg"]\noutput = "attr/{{stem}}-{{attribute}}.png"\n'
                         f'attribute = "mouth_open"\nstrength = -1\niterations = 2\n'
                         f'backbone = "{models_dir / "dlib-resnet.json"}"\nbank = "{bank}"\n', "attr.toml")
    result = run_batch(path, quiet=True, say=quiet)
    assert [r["status"] for r in result.records] == ["done"] and result.records[0]["measure"] == "mouth_open"
    mtime = (photos / "attr" / "biden_2-mouth_open.png").stat().st_mtime_ns
    assert run_batch(path, quiet=True, say=quiet).records[0]["status"] == "skipped"
    assert run_batch(path, quiet=True, say=quiet, force=True).records[0]["status"] == "done"
    assert (photos / "attr" / "biden_2-mouth_open.png").stat().st_mtime_ns != mtime


# --- the same recipe on a local 2-worker Dask cluster ------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client

    from engine.batch.run import local_cluster

    c = local_cluster(2)
    client = Client(c)
    yield client
    client.close()
    c.close()


def same_pixels(a: Path, b: Path) -> bool:
    """Equal up to one level in a handful of pixels: workers run torch with another thread count, whose float
    sums may round differently."""
    x, y = (np.asarray(Image.open(p), np.int16) for p in (a, b))
    diff = np.abs(x - y)
    return x.shape == y.shape and diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.slow
def test_cluster_run_matches_the_single_process_run(photos, models_dir, cluster):
    single = write(photos, recipe_text(models_dir, out="single", extra="seed = 3\n"), "single.toml")
    spread = write(photos, recipe_text(models_dir, out="spread", extra="seed = 3\n"), "spread.toml")
    a = run_batch(single, quiet=True, say=quiet)
    b = run_batch(spread, quiet=True, say=quiet, client=cluster)
    assert [r["status"] for r in a.records] == [r["status"] for r in b.records]
    assert [r.get("error") for r in a.records] == [r.get("error") for r in b.records]
    done = [Path(r["output"]).name for r in a.records if r["status"] == "done"]
    assert len(done) == 3
    for name in done:
        assert same_pixels(photos / "single" / name, photos / "spread" / name), name
    pids = set(cluster.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2  # it really ran in two other processes


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_only_its_image(photos, models_dir, cluster):
    path = write(photos, recipe_text(models_dir, out="killed", strengths="[1.0, 0.5]",
                                     extra="iterations = 8\n").replace("iterations = 4\n", ""), "killed.toml")
    before = cluster.run(os.getpid)
    killed = []

    def kill_one_busy_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            busy = [addr for addr, keys in cluster.processing().items() if keys]
            if busy and any(str(k).startswith("fat-") for k in cluster.processing()[busy[0]]):
                time.sleep(1.5)  # well inside the task: past start-up, model load and detection
                os.kill(before[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    result = run_batch(path, quiet=True, say=quiet, client=cluster)
    killer.join(timeout=5)
    assert killed, "no worker was busy to kill"
    statuses = {(Path(r["input"]).name, r["strength"]): r["status"] for r in result.records}
    assert sum(s == "done" for s in statuses.values()) == 6  # every good image, both strengths
    assert sum(s == "failed" for s in statuses.values()) == 4  # only the faceless and corrupt ones
    for r in result.records:
        if r["status"] == "done":
            assert Path(r["output"]).is_file() and Path(r["output"]).with_suffix(".json").is_file()
    assert set(cluster.run(os.getpid).values()) != set(before.values())  # the nanny replaced the dead worker


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_image_and_says_how_to_resume(photos, models_dir):
    import subprocess
    import sys

    path = write(photos, recipe_text(models_dir, out="stopped").replace('["photos/*"]', '["photos/*.jpg"]')
                 .replace('"photos/*.jpg"]', '"photos/biden_2.jpg", "photos/obama_1.jpg", '
                                             '"photos/obama_biden_group.jpg"]'), "stop.toml")
    out = photos / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "batch", str(path), "--quiet"], cwd=Path(
        __file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 6, err
    assert "stopping after the current image" in err and "again to resume" in err
    finished = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(finished) < 3, finished
    statuses = [json.loads(line)["status"] for line in (out / "report.jsonl").read_text().splitlines()]
    assert statuses.count("not run") == 3 - len(finished)
    again = run_batch(path, quiet=True, say=quiet).records
    assert sorted(r["status"] for r in again) == sorted(["skipped"] * len(finished) + ["done"] * (3 - len(finished)))


def test_a_region_named_or_left_to_auto_is_the_same_task():
    """Resume keys hash the region as the edit resolves it: no region, 'auto' and the mouth are one edit."""
    from engine.batch.tasks import task_key

    keys = {task_key(o, 1.0, "largest", {"r": "0"}) for o in ({}, {"region": "auto"}, {"region": "mouth"})}
    assert len(keys) == 1
    smile = {task_key({"attribute": "smiling", **o}, 1.0, "largest", {"r": "0"}) for o in ({}, {"region": "smile"})}
    assert len(smile) == 1 and smile != keys
    assert task_key({"region": "eyes"}, 1.0, "largest", {"r": "0"}) not in keys
