"""Quality of the edit against classic compositing, per region, judged by independent models.

    .venv/bin/python -m bench.quality [--region mouth --region smile ...] [--methods default seamlessclone]
        [--faces ../shared/faces] [--eval /tmp/face-eval] [--out out/quality]

For each region, fixed pairs from the shared labelled photos (a reference, and a guide of another person
whose value of the region's measure differs: an open mouth, a broad smile, narrower or wider eyes, higher
or lower brows; chosen from the judges' own readings of the 40 photos) run through each method; every
result, a contact sheet PNG per region and a table are written: identity kept (mobileface cosine, faceres
distance, reference -> result, by the judges in ../shared/eval, which the product never uses), the
region's measure before -> after and the guide's own value, the guide-relative move (after - before) /
(guide - before) (1 = the guide's value reached, 0 = unchanged), face-api 'happy', and time. Needs the
judges set up once (see their README).
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
from engine.errors import FATError
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
# region -> (pairs, the judges' measure as a path into compare.py's JSON). Smile: references the judges read
# as not smiling (face-api happy < 0.1), guides smiling broadly (happy >= 0.99). Eyes / eyebrows: the pairs
# whose eye aspect ratio / brow height differ most (0.07-0.09 / 0.07-0.13), both directions.
REGION_PAIRS = {
    "mouth": (PAIRS, ("mouth", "open_68")),
    "smile": ([("biden_1.jpg", "obama_1.jpg"), ("anthony_hopkins_1.jpg", "sundar_pichai_1.jpg"),
               ("kit_harington_2.jpg", "tom_cruise_1.jpg"), ("rose_leslie_1.jpg", "angelina_jolie_1.jpg"),
               ("jennifer_aniston_2.jpg", "celebahq_female_031796.jpg"),
               ("celebahq_male_060259.jpg", "george_clooney_1.jpg"),
               ("celebahq_female_030321.jpg", "alex_lacamoire_1.png"),
               ("kit_harington_1.jpg", "mark_zuckerberg_2.jpg")], ("expressions", "happy")),
    "eyes": ([("kit_harington_2.jpg", "tom_cruise_1.jpg"), ("lin_manuel_miranda_1.png", "anthony_hopkins_2.jpg"),
              ("tom_hanks_1.png", "scarlett_johansson_2.jpg"), ("mark_zuckerberg_1.jpg", "george_clooney_1.jpg"),
              ("anthony_hopkins_2.jpg", "kit_harington_2.jpg"), ("biden_2.jpg", "jennifer_aniston_2.jpg"),
              ("tom_cruise_1.jpg", "celebahq_female_030321.jpg"), ("scarlett_johansson_2.jpg", "jeff_bezos_2.jpg")],
             ("eyes", "open_68")),
    "eyebrows": ([("tom_cruise_1.jpg", "celebahq_female_031796.jpg"),
                  ("celebahq_male_020167.jpg", "mark_zuckerberg_2.jpg"), ("rose_leslie_1.jpg", "biden_1.jpg"),
                  ("biden_2.jpg", "jeff_bezos_2.jpg"), ("scarlett_johansson_2.jpg", "angelina_jolie_1.jpg"),
                  ("mark_zuckerberg_2.jpg", "tom_cruise_1.jpg"), ("celebahq_female_031796.jpg", "sundar_pichai_2.jpg"),
                  ("biden_1.jpg", "george_clooney_1.jpg")], ("eyes", "brow_68")),
}
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
    # the classic baselines: a plain paste of the similarity-aligned guide, nothing bent
    "seamlessclone": {"init": "seamless", "iterations": 0, "warp": "none"},
    "feathered": {"init": "feathered", "iterations": 0, "warp": "none"},
    "warp-none": {"warp": "none"},
    # the smile pairs' reference point: a mouth-only change, the lips pasted at the corners (nothing bent)
    "mouth-only": {"region": "mouth", "warp": "none"},
    # the mouth region as it ships (bent to the guide's opening): a stricter identity reference for the smile pairs
    "mouth-region": {"region": "mouth"},
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


def run_region(region: str, args, backbone, overrides: dict) -> dict:
    """Edit every pair of the region with every method; judge; print and return the region's table."""
    pairs, measure = REGION_PAIRS[region]
    out = args.out / region
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods or (["default", "seamlessclone"] + (["mouth-only"] if region == "smile" else []))
    rows, jobs, times = [], [], {}
    for ref_name, guide_name in pairs[: args.pairs]:
        ref, guide = args.faces / ref_name, args.faces / guide_name
        tiles, done = [], []
        try:
            for method in methods:
                t0 = time.perf_counter()
                r = edit(ref, guide=guide, backbone=backbone, overrides=overrides,
                         **{"region": region, **METHODS[method]})
                times[(ref_name, method)] = time.perf_counter() - t0
                path = out / f"{Path(ref_name).stem}__{method}.png"
                r.save(path, sidecar=False)
                done.append((ref, path, ref_name, method))
                if not tiles:
                    tiles += [r.crops["reference"], r.crops["guide"]]
                tiles.append(r.crops["result"])
        except FATError as e:  # a face the engine refuses (too small...): say so, leave the pair out
            print(f"skipped pair {ref_name} / {guide_name}: {e}")
            continue
        jobs += [(ref, guide, ref_name, "guide")] + done  # with the judges' reading of the guide itself
        rows.append(side_by_side(tiles, 200))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    write_png(out / "contact-sheet.png", sheet)
    print(f"\n== {region}: contact sheet {out / 'contact-sheet.png'} (columns: reference, guide, {', '.join(methods)})")

    verdicts = judge(args.eval, [(str(a.resolve()), str(b.resolve())) for a, b, _, _ in jobs])
    guide_value = {j[2]: pick(v, *measure, 1) for j, v in zip(jobs, verdicts, strict=True) if j[3] == "guide"}
    name = ".".join(measure)
    table: dict[str, list[dict]] = {m: [] for m in methods}
    print(f"{'pair':28s} {'method':14s} {'mobileface':>10s} {'faceres':>8s} {name + ' ref->after (guide)':>30s} "
          f"{'moved':>6s} {'mouth_open':>13s} {'happy':>11s} {'time s':>6s}")
    for (_, _, ref_name, method), v in zip(jobs, verdicts, strict=True):
        if method == "guide":
            continue
        before, after, target = pick(v, *measure, 0), pick(v, *measure, 1), guide_value[ref_name]
        span = target - before
        row = {
            "mobileface": pick(v, "identity", "mobileface", "value"),
            "faceres": pick(v, "identity", "faceres", "euclidean"),
            "before": before, "after": after, "guide": target,
            "moved": (after - before) / span if abs(span) > 1e-6 else float("nan"),
            "open_before": pick(v, "mouth", "open_68", 0), "open_after": pick(v, "mouth", "open_68", 1),
            "happy_before": pick(v, "expressions", "happy", 0), "happy_after": pick(v, "expressions", "happy", 1),
            "time": times[(ref_name, method)],
        }
        table[method].append(row)
        print(f"{ref_name:28s} {method:14s} {row['mobileface']:10.3f} {row['faceres']:8.2f} "
              f"{before:9.3f}->{after:6.3f} ({target:6.3f}) {row['moved']:6.2f} "
              f"{row['open_before']:6.3f}->{row['open_after']:5.3f} "
              f"{row['happy_before']:4.2f}->{row['happy_after']:4.2f} {row['time']:6.1f}")
    return summarise(region, table)


def summarise(region: str, table: dict[str, list[dict]]) -> dict:
    print(f"summary, {region} (means over pairs; opened = mouth_open > 0.08 after and < 0.05 before; half-way = "
          "moved >= 0.5; happy* = mean happy after where the guide's happy >= 0.9)")
    summary = {}
    for m, rs in table.items():
        opened = sum(1 for r in rs if r["open_before"] < 0.05 and r["open_after"] > 0.08)
        eligible = sum(1 for r in rs if r["open_before"] < 0.05)
        half = sum(1 for r in rs if r["moved"] >= 0.5)
        s = {k: float(np.nanmean([r[k] for r in rs])) for k in ("mobileface", "faceres", "time", "before", "after",
                                                              "moved", "happy_after")}
        happy_guided = [r["happy_after"] for r in rs if region == "smile" and r["guide"] >= 0.9]
        s.update(opened=opened, eligible=eligible, half_way=half, pairs=len(rs),
                 happy_where_guide_happy=float(np.mean(happy_guided)) if happy_guided else float("nan"))
        summary[m] = s
        print(f"  {m:14s} mobileface {s['mobileface']:.3f}  faceres {s['faceres']:5.2f}  measure {s['before']:.3f}"
              f"->{s['after']:.3f}  moved {s['moved']:.2f}  half-way {half}/{len(rs)}  opened {opened}/{eligible}  "
              f"happy* {s['happy_where_guide_happy']:.2f}  time {s['time']:.1f} s")
    return {"summary": summary, "rows": table}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces")
    p.add_argument("--eval", type=Path, default=Path("/tmp/face-eval"))
    p.add_argument("--out", type=Path, default=Path("out/quality"))
    p.add_argument("--region", action="append", choices=list(REGION_PAIRS),
                   help="repeatable (default: mouth); each region has its own pairs and measure")
    p.add_argument("--methods", nargs="*", default=None,
                   help=f"of {', '.join(METHODS)} (default: default, seamlessclone; smile adds mouth-only)")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override recipe numbers for the optimised methods, e.g. colour=20 tv=0.1")
    args = p.parse_args()
    missing = sorted({n for r in args.region or ["mouth"] for pair in REGION_PAIRS[r][0] for n in pair
                      if not (args.faces / n).is_file()})
    if missing:
        raise SystemExit(f"not in {args.faces}: {', '.join(missing)}")
    backbone = load_backbone()
    overrides = {k: float(v) for k, v in (kv.split("=") for kv in args.set)}
    results = {region: run_region(region, args, backbone, overrides) for region in args.region or ["mouth"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
