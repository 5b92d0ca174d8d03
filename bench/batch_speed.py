"""Batch recipes: images per minute for a 20-photo recipe, each backbone, one process vs a local Dask cluster.

    .venv/bin/python -m bench.batch_speed [--photos ../shared/faces] [--count 20] [--jobs 2]
        [--backbone dlib-resnet --backbone /tmp/vgg-models/vggface.json] [--iterations 40]

One run on this machine (not a test; machines are noisy): for each backbone, the same recipe (mouth from
examples/obama_2.jpg, largest face, default options) runs once in this process and once with --jobs N,
into fresh output folders; the figures include start-up (worker spawn, imports, model load), as a user
pays it. Photos where no face is found count as done (they cost detection time) and are reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine.batch.api import run_batch

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TYPES = (".jpg", ".jpeg", ".png")


def recipe(folder: Path, photos: list[Path], backbone: str, iterations: int, out: str) -> Path:
    inputs = ", ".join(f'"{p}"' for p in photos)
    path = folder / f"{out}.toml"
    path.write_text(f'inputs = [{inputs}]\noutput = "{folder / out}/{{stem}}.png"\n'
                    f'guide = "{ROOT / "examples" / "obama_2.jpg"}"\nbackbone = "{backbone}"\n'
                    f"iterations = {iterations}\n")
    return path


def timed(path: Path, jobs: int) -> tuple[float, list[dict]]:
    t = time.perf_counter()
    result = run_batch(path, jobs=jobs, quiet=True, say=lambda _m: None)
    return time.perf_counter() - t, result.records


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "faces")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--backbone", action="append", help="name or spec .json (repeatable; default dlib-resnet)")
    p.add_argument("--iterations", type=int, default=40)
    args = p.parse_args()
    photos = sorted(f for f in args.photos.iterdir() if f.suffix.lower() in IMAGE_TYPES)[: args.count]
    print(f"{len(photos)} photos from {args.photos}, {args.iterations} iterations, cluster: {args.jobs} workers")
    for backbone in args.backbone or ["dlib-resnet"]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            rates = {}
            for label, jobs in (("1 process", 1), (f"cluster x{args.jobs}", args.jobs)):
                seconds, records = timed(recipe(folder, photos, backbone, args.iterations, f"out{jobs}"), jobs)
                done = sum(r["status"] == "done" for r in records)
                failed = [Path(r["input"]).name for r in records if r["status"] == "failed"]
                rates[label] = len(records) / seconds * 60
                edit_s = [r["seconds"] for r in records if r["status"] == "done"]
                print(f"{Path(backbone).stem:12} {label:11}: {seconds:6.1f} s for {len(records)} images = "
                      f"{rates[label]:5.1f} images/min ({done} edited, mean {sum(edit_s) / max(1, len(edit_s)):.1f}"
                      f" s per image inside its worker; failed: {', '.join(failed) or 'none'})")
            first, second = rates.values()
            print(f"{Path(backbone).stem:12} cluster / 1 process: {second / first:.2f}x")


if __name__ == "__main__":
    main()
