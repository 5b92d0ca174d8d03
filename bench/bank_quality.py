"""Attribute-bank edits (no guide photo), judged by the independent models of ../shared/eval.

    .venv/bin/python -m bench.bank_quality [--faces ../shared/faces] [--bank BANK] [--eval /tmp/face-eval]
        [--out out/bank-quality] [--tasks smiling,mouth_open,remove] [--set NAME=VALUE ...] [--sheet 6]

The bank is built from --faces with faces.csv labels (once; reused from --bank). Every edit leaves the
reference's own person out (Bank.subset on faces.csv's identity_group), so no example is the same person.
Tasks (faces.csv labels pick the references):
  smiling     every non-smiling reference, --attribute smiling --strength 1:
              accepted if face-api `happy` rises by >= 0.5 in >= 80 % and mobileface cosine >= 0.75 in >= 90 %
  mouth_open  every closed-mouth reference, --attribute mouth_open --strength 1:
              accepted if the 68-point mouth_open goes from < 0.05 to > 0.08 in >= 80 %
  remove      every smiling reference, --attribute smiling --strength -1: `happy` should fall
Writes every result, results.json, a table per reference, and contact-sheet.png (reference, strengths
-1 / 0.5 / 1 / 1.5 for the first --sheet non-smiling references; the face crops the engine works on).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.quality import judge, pick
from engine.api import edit_strengths
from engine.bank.store import load_bank
from engine.face.detect import detect_faces, find_face
from engine.io.debug import side_by_side, write_png
from engine.io.images import load_photo
from engine.models.backbone import load_backbone

TASKS = {  # name -> (attribute, label column, label value of the references, strength)
    "smiling": ("smiling", "smiling", "0", 1.0),
    "mouth_open": ("mouth_open", "mouth_open", "0", 1.0),
    "remove": ("smiling", "smiling", "1", -1.0),
}


def groups(row: dict) -> set[str]:
    return set(row["identity_group"].split(";"))


def bank_without(bank, rows_by_name: dict[str, dict], people: set[str]):
    keep = np.array([not (groups(rows_by_name[e["name"]]) & people) if e["name"] in rows_by_name else True
                     for e in bank.entries], bool)
    return bank.subset(keep)


def judged_pair(ref: Path, out: Path, folder: Path) -> tuple[Path, Path]:
    """What the judges compare: the photos themselves, or for a photo with several faces, the same square around the
    face the engine edits (its largest, engine/face/detect.py find_face) cut from both. The judges compare the
    largest face they find, which in a group photo can be another person's, unchanged by the edit."""
    rgb = load_photo(ref).rgb8()
    if len(detect_faces(rgb)) < 2:
        return ref, out.resolve()
    x0, y0, x1, y1 = find_face(rgb).box
    half = 1.2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (int(max(0, cx - half)), int(max(0, cy - half)), int(cx + half), int(cy + half))
    folder.mkdir(parents=True, exist_ok=True)
    cut = folder / f"{ref.stem}-reference.png", folder / out.name
    Image.fromarray(rgb).crop(box).save(cut[0])  # the reference as the engine read it (orientation applied)
    with Image.open(out) as result:
        result.convert("RGB").crop(box).save(cut[1])
    return cut[0].resolve(), cut[1].resolve()


def run_edit(ref: Path, attribute: str, strengths: list[float], bank, bb, overrides: dict, region: str | None):
    extra = {"region": region} if region else {}
    return edit_strengths(str(ref), strengths, attribute=attribute, bank=bank, backbone=bb, overrides=overrides,
                          **extra)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces")
    p.add_argument("--bank", type=Path, default=Path("out/bank-quality/faces-bank.npz"))
    p.add_argument("--eval", type=Path, default=Path("/tmp/face-eval"))
    p.add_argument("--out", type=Path, default=Path("out/bank-quality"))
    p.add_argument("--tasks", default="smiling,mouth_open,remove")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--sheet", type=int, default=6, help="non-smiling references on the contact sheet")
    p.add_argument("--region", help="edit region instead of each attribute's own (engine/bank/attributes.py)")
    p.add_argument("--limit", type=int, default=0, help="at most this many references per task (0 = all)")
    args = p.parse_args()
    overrides = {k: float(v) for k, _, v in (s.partition("=") for s in args.set)}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.bank.exists():
        subprocess.run([sys.executable, "-m", "engine", "bank", "build", str(args.faces), "-o", str(args.bank),
                        "--labels", str(args.faces / "faces.csv"), "--quiet"], check=True)
    bank = load_bank(args.bank)
    rows = list(csv.DictReader((args.faces / "faces.csv").open()))
    by_name = {r["file"]: r for r in rows}
    in_bank = {e["name"] for e in bank.entries}
    bb = load_backbone("dlib-resnet")
    records, pairs = [], []
    for task in args.tasks.split(","):
        attribute, column, value, strength = TASKS[task]
        refs = [r for r in rows if r[column] == value and r["file"] in in_bank]
        refs = refs[: args.limit] if args.limit else refs
        for r in refs:
            sub = bank_without(bank, by_name, groups(r))
            t = time.perf_counter()
            res = run_edit(args.faces / r["file"], attribute, [strength], sub, bb, overrides, args.region)[0]
            out = args.out / f"{task}-{Path(r['file']).stem}.png"
            res.save(out)
            records.append({"task": task, "ref": r["file"], "out": str(out), "seconds": time.perf_counter() - t,
                            "pixels_from": res.settings["examples"]["pixels_from"]})
            pairs.append(judged_pair(args.faces / r["file"], out, args.out / "judged"))
            print(f"{task} {r['file']}: {time.perf_counter() - t:.1f} s", flush=True)
    sheet_rows = []
    for r in [r for r in rows if r["smiling"] == "0" and r["file"] in in_bank][: args.sheet]:
        sub = bank_without(bank, by_name, groups(r))
        neg = run_edit(args.faces / r["file"], "smiling", [-1.0], sub, bb, overrides, args.region)[0]
        pos = run_edit(args.faces / r["file"], "smiling", [0.5, 1.0, 1.5], sub, bb, overrides, args.region)
        sheet_rows.append(side_by_side([neg.crops["reference"], neg.crops["result"],
                                        *(x.crops["result"] for x in pos)], 200))
    if sheet_rows:
        width = max(s.shape[1] for s in sheet_rows)
        sheet = np.vstack([np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0))) for s in sheet_rows])
        write_png(args.out / "contact-sheet.png", sheet)
    judged = judge(args.eval, pairs)
    for rec, j in zip(records, judged, strict=True):
        rec.update(happy=pick(j, "expressions", "happy"), open68=pick(j, "mouth", "open_68"),
                   mobileface=pick(j, "identity", "mobileface", "value"))
    (args.out / "results.json").write_text(json.dumps(records, indent=1))
    report(records)


def report(records: list[dict]) -> None:
    for task in TASKS:
        recs = [r for r in records if r["task"] == task]
        if not recs:
            continue
        print(f"\n{task}: reference | happy before -> after | mouth_open before -> after | mobileface | s | pixels")
        ok_attr = ok_id = able = 0
        for r in recs:
            (h0, h1), (m0, m1), cos = r["happy"], r["open68"], r["mobileface"]
            if task == "smiling":
                hit, can = h1 - h0 >= 0.5, h0 < 0.5  # a face the judge already reads happy cannot rise by 0.5
            elif task == "mouth_open":
                hit, can = m0 < 0.05 and m1 > 0.08, m0 < 0.05  # labelled closed, but read open: cannot count
            else:
                hit, can = h1 < h0, True
            ok_attr += hit
            able += can
            ok_id += cos >= 0.75
            src = ", ".join(Path(f).name for f in r["pixels_from"])
            print(f"  {r['ref']:28s} {h0:5.2f} -> {h1:5.2f} | {m0:5.3f} -> {m1:5.3f} | {cos:5.3f} | "
                  f"{r['seconds']:4.1f} | {'HIT ' if hit else 'miss'} {src}")
        n = len(recs)
        goal = {"smiling": "happy +0.5 (goal >= 80 %)", "mouth_open": "mouth_open < 0.05 -> > 0.08 (goal >= 80 %)",
                "remove": "happy falls"}[task]
        print(f"  {task}: {goal}: {ok_attr}/{n} = {100 * ok_attr / n:.0f} %; mobileface >= 0.75 (goal >= 90 %): "
              f"{ok_id}/{n} = {100 * ok_id / n:.0f} %")
        if able < n:  # the labels and the judge disagree on some references: the best count possible is `able`
            print(f"    of the {able} the judge reads as able to change before the edit: {ok_attr}/{able} = "
                  f"{100 * ok_attr / max(able, 1):.0f} % (at most {able}/{n} = {100 * able / n:.0f} % of all)")


if __name__ == "__main__":
    main()
