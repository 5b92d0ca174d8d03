"""Quality of the edit against classic compositing, judged by independent models.

    .venv/bin/python -m bench.quality [--faces ../shared/faces] [--eval /tmp/face-eval] [--out out/quality]

Runs fixed (reference without an open mouth, guide of another person with one)
pairs from the shared labelled photos through each method, writes every result,
a contact sheet PNG, and a table: identity kept (mobileface cosine, faceres distance,
reference -> result, by the judges in ../shared/eval, which the product never uses),
mouth opening (68-landmark inner-lip gap / eye distance) before -> after, face-api
'happy' before -> after, and time. Needs the judges set up once (see their README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.api import edit
from engine.io.debug import side_by_side, write_png
from engine.models.backbone import load_backbone

PAIRS = [
    ("biden_1.jpg", "obama_1.jpg"),
    ("mark_zuckerberg_1.jpg", "celebahq_male_164930.jpg"),
    ("jeff_bezos_1.jpg", "biden_2.jpg"),
    ("angelina_jolie_2.jpg", "scarlett_johansson_2.jpg"),
    ("jennifer_aniston_2.jpg", "celebahq_female_031796.jpg"),
    ("rose_leslie_1.jpg", "angelina_jolie_1.jpg"),
    ("kit_harington_2.jpg", "tom_cruise_1.jpg"),
    ("celebahq_female_030321.jpg", "angelina_jolie_1.jpg"),
    ("anthony_hopkins_2.jpg", "alex_lacamoire_2.jpg"),
    ("jeff_bezos_2.jpg", "mark_zuckerberg_2.jpg"),
]
# method name -> edit() keyword arguments
METHODS = {
    "default": {},
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp32-40": {"precision": "fp32", "iterations": 40},
    "bf16-40": {"precision": "bf16", "iterations": 40},
    "warp-affine": {"warp": "affine"},
    "warp-tps": {"warp": "tps"},
    "warp-similarity": {"warp": "similarity"},
    "reference-init": {"init": "reference"},
    "composite-only": {"init": "composite", "iterations": 0},
    "seamlessclone": {"init": "seamless", "iterations": 0},
    "feathered": {"init": "feathered", "iterations": 0},
}


def judge(eval_dir: Path, pairs: list[tuple[Path, Path]]) -> list[dict]:
    tsv = eval_dir / "pairs-quality.tsv"
    tsv.write_text("".join(f"{r}\t{e}\n" for r, e in pairs))
    out = subprocess.run([sys.executable, "compare.py", "--pairs", str(tsv), "--json"], cwd=eval_dir,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"judges failed: {out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def pick(rec, *path, default=float("nan")):
    for p in path:
        try:
            rec = rec[p]
        except (KeyError, IndexError, TypeError):
            return default
    return default if rec is None else rec


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces")
    p.add_argument("--eval", type=Path, default=Path("/tmp/face-eval"))
    p.add_argument("--out", type=Path, default=Path("out/quality"))
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--pairs", type=int, default=len(PAIRS))
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override recipe numbers for the optimised methods, e.g. colour=20 tv=0.1")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone()
    overrides = {k: float(v) for k, v in (kv.split("=") for kv in args.set)}
    rows, jobs, times = [], [], {}
    for ref_name, guide_name in PAIRS[: args.pairs]:
        ref, guide = args.faces / ref_name, args.faces / guide_name
        tiles = []
        for method in args.methods:
            t0 = time.perf_counter()
            r = edit(ref, guide=guide, region="mouth", backbone=backbone, overrides=overrides, **METHODS[method])
            times[(ref_name, method)] = time.perf_counter() - t0
            out = args.out / f"{Path(ref_name).stem}__{method}.png"
            r.save(out, sidecar=False)
            jobs.append((ref, out, ref_name, method))
            if not tiles:
                tiles += [r.crops["reference"], r.crops["guide"]]
            tiles.append(r.crops["result"])
        rows.append(side_by_side(tiles, 200))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    write_png(args.out / "contact-sheet.png", sheet)
    print(f"contact sheet: {args.out / 'contact-sheet.png'} (columns: reference, guide, {', '.join(args.methods)})")

    verdicts = judge(args.eval, [(str(a.resolve()), str(b.resolve())) for a, b, _, _ in jobs])
    table: dict[str, list[dict]] = {m: [] for m in args.methods}
    print(f"\n{'pair':28s} {'method':15s} {'mobileface':>10s} {'faceres':>8s} {'mouth_open':>16s} "
          f"{'happy':>12s} {'time s':>7s}")
    for (_, _, ref_name, method), v in zip(jobs, verdicts, strict=True):
        row = {
            "mobileface": pick(v, "identity", "mobileface", "value"),
            "faceres": pick(v, "identity", "faceres", "euclidean"),
            "open_before": pick(v, "mouth", "open_68", 0), "open_after": pick(v, "mouth", "open_68", 1),
            "happy_before": pick(v, "expressions", "happy", 0), "happy_after": pick(v, "expressions", "happy", 1),
            "time": times[(ref_name, method)],
        }
        table[method].append(row)
        print(f"{ref_name:28s} {method:15s} {row['mobileface']:10.3f} {row['faceres']:8.2f} "
              f"{row['open_before']:7.3f}->{row['open_after']:6.3f} "
              f"{row['happy_before']:5.2f}->{row['happy_after']:5.2f} {row['time']:7.1f}")
    print("\nsummary (mean over pairs; opened = mouth_open > 0.08 after and < 0.05 before)")
    summary = {}
    for m, rs in table.items():
        opened = sum(1 for r in rs if r["open_before"] < 0.05 and r["open_after"] > 0.08)
        eligible = sum(1 for r in rs if r["open_before"] < 0.05)
        summary[m] = {k: float(np.nanmean([r[k] for r in rs])) for k in ("mobileface", "faceres", "time")}
        summary[m].update(opened=opened, eligible=eligible)
        print(f"  {m:15s} mobileface {summary[m]['mobileface']:.3f}  faceres {summary[m]['faceres']:.2f}  "
              f"opened {opened}/{eligible}  time {summary[m]['time']:.1f} s")
    (args.out / "summary.json").write_text(json.dumps({"summary": summary, "rows": table}, indent=1))
    (args.out / "judges-raw.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))


if __name__ == "__main__":
    main()
