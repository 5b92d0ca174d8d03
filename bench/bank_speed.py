"""Attribute banks: build time per photo and edit time with a bank (one run, this machine; not a test).

    .venv/bin/python -m bench.bank_speed [--photos examples] [--reference examples/biden_1.jpg] [--repeat 2]

Builds a bank from --photos into a temporary file (all faces), adds the same photos again (the incremental
path: hashing only), then times attribute edits of --reference with it: setup (load, detect, align, choose)
and the optimisation, at strength 1 and for a series of three strengths (warm starts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine.api import edit_strengths
from engine.bank.build import add_photos, new_bank, photo_files
from engine.bank.labels import read_labels
from engine.bank.store import load_bank, save_bank
from engine.models.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=Path, default=ROOT / "examples")
    p.add_argument("--labels", type=Path, default=ROOT / "examples" / "labels.csv")
    p.add_argument("--reference", type=Path, default=ROOT / "examples" / "biden_1.jpg")
    p.add_argument("--attribute", default="mouth_open")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    bb = load_backbone("dlib-resnet")
    files = photo_files([args.photos])
    labels = read_labels(args.labels) if args.labels.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.npz"
        t = time.perf_counter()
        bank = new_bank(bb)
        report = add_photos(bank, bb, files, labels, all_faces=True)
        build = time.perf_counter() - t
        t = time.perf_counter()
        save_bank(bank, path)
        save = time.perf_counter() - t
        print(f"build: {len(files)} photos, {report.added} faces, {len(report.skipped)} skipped: {build:.1f} s = "
              f"{build / max(1, report.photos):.2f} s/photo; save {save:.2f} s, {path.stat().st_size / 1e6:.1f} MB")
        t = time.perf_counter()
        bank = load_bank(path)
        again = add_photos(bank, bb, files, labels, all_faces=True)
        print(f"load + re-add the same photos (hash only): {time.perf_counter() - t:.2f} s, "
              f"{again.unchanged} unchanged, {again.added} added")
        for strengths in ([1.0], [0.5, 1.0, 1.5]):
            for _ in range(args.repeat):
                t = time.perf_counter()
                results = edit_strengths(str(args.reference), strengths, attribute=args.attribute, bank=bank,
                                         backbone=bb, k=1)
                total = time.perf_counter() - t
                parts = ", ".join(f"s{r.settings['strength']:g}: {r.timings['edit']:.1f} s" for r in results)
                print(f"edit {args.reference.name} --attribute {args.attribute} --strength "
                      f"{','.join(f'{s:g}' for s in strengths)}: {total:.1f} s (setup {results[0].timings['setup']:.1f}"
                      f" s; {parts})")


if __name__ == "__main__":
    main()
