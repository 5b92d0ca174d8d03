"""`python -m engine bank build PHOTO_OR_DIR... -o BANK [--labels CSV] [--backbone NAME] [--all-faces]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import EXIT_USAGE, FATError, deferred_interrupts


def parser(parser_class) -> argparse.ArgumentParser:
    p = parser_class(prog="python -m engine bank", description="Attribute banks: example faces with and without "
                     "each attribute, for `python -m engine edit REF --attribute NAME`.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=parser_class)
    b = sub.add_parser("build", help="create a bank, or add photos to one (only new photos are processed)")
    b.add_argument("inputs", type=Path, nargs="+", metavar="PHOTO_OR_DIR", help="photos, or folders of photos")
    b.add_argument("-o", "--output", type=Path, help="bank file (.npz); extended if it exists (default: the "
                   "default bank in the models folder)")
    b.add_argument("--labels", type=Path, help="labels: a CSV with a 'file' column and 0/1 attribute columns "
                   "(smiling, mouth_open, eyes_closed, brows_raised), or CelebA's list_attr_celeba.txt; "
                   "attributes it lacks are measured from the landmarks")
    b.add_argument("--backbone", help="vggface, dlib-resnet, or a spec .json (default: the best installed)")
    b.add_argument("--all-faces", action="store_true", help="every face of each photo (default: the largest)")
    b.add_argument("--detector", choices=("hog", "cnn"), default="hog", help="face detector (default hog)")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def cmd_build(args) -> int:
    from engine.bank.build import add_photos, new_bank, photo_files
    from engine.bank.labels import read_labels
    from engine.bank.store import check_backbone, load_bank, save_bank
    from engine.bank.where import default_bank
    from engine.models.backbone import load_backbone, resolve_name
    from engine.models.runtime import resolve_device

    labels = read_labels(args.labels) if args.labels else None
    files = photo_files(args.inputs)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FATError(f"no such file: {', '.join(missing)}.", EXIT_USAGE)
    backbone = resolve_name(args.backbone)
    out = args.output or default_bank(backbone)
    bb = load_backbone(backbone, resolve_device(args.device))
    if out.exists():
        bank = load_bank(out)
        check_backbone(bank, bb.spec)
    else:
        bank = new_bank(bb)
    bar = None

    def progress(i: int, n: int, name: str) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="bank", unit="photo", file=sys.stderr, leave=False)
        bar.n = i
        bar.set_postfix_str(name, refresh=False)
        bar.refresh()

    try:
        report = add_photos(bank, bb, files, labels, args.all_faces, args.detector, progress)
    finally:
        if bar is not None:
            bar.close()
    if report.added or not out.exists():
        save_bank(bank, out)
    print(f"{out}: {len(bank)} faces ({report.added} added from {report.photos} new photo(s), "
          f"{report.unchanged} already in the bank, {len(report.skipped)} skipped)")
    for path, why in report.skipped:
        print(f"  skipped {path}: {why}")
    counts = ", ".join(f"{a} {int((bank.labels_of(a) == 1).sum())}/{int((bank.labels_of(a) == 0).sum())}"
                       for a in bank.attributes)
    print(f"  with/without: {counts}")
    return 0


def main(argv: list[str], parser_class) -> int:
    args = parser(parser_class).parse_args(argv)
    return {"build": cmd_build}[args.command](args)


def outputs_for(output: Path, strengths: list[float]) -> list[Path]:
    """One strength: OUTPUT; several: OUTPUT-s0.5.png, OUTPUT-s1.png, ..."""
    if len(strengths) <= 1:
        return [output]
    return [output.with_name(f"{output.stem}-s{s:g}{output.suffix}") for s in strengths]


def cmd_attribute_edit(args, options, check_inputs, progress_printer, write_debug, session) -> int:
    """`python -m engine edit REF --attribute NAME [--bank BANK] [--strength S | S1,S2,...] -o OUT`."""
    from engine.io.paths import check_output_path

    if options.attribute is None:
        raise FATError("give a guide photo (--guide GUIDE) or an attribute (--attribute "
                       "smiling|mouth_open|eyes_closed|brows_raised).", EXIT_USAGE)
    if args.guide is not None:
        raise FATError("give either a guide photo (--guide) or an attribute (--attribute), not both.", EXIT_USAGE)
    strengths = args.strengths or [options.strength]
    outs = outputs_for(args.output, strengths)
    check_inputs(args)
    if args.bank is not None:
        from engine.bank.store import check_bank_path

        check_bank_path(args.bank)
    for out in outs:
        check_output_path(out, [args.reference], sidecar=not args.no_sidecar)
    from engine.frontends.cli import face_search

    with face_search(args, options, session):  # the reference's face, found while torch loads
        return _edit_strengths(args, options, strengths, outs, progress_printer, write_debug, session)


def _edit_strengths(args, options, strengths, outs, progress_printer, write_debug, session) -> int:
    import json
    import time

    with deferred_interrupts():  # as for guide edits: Ctrl-C during torch's import is a clean "cancelled"
        from engine.api import edit_strengths

    log = (lambda m: None) if args.quiet and not args.json_progress else (lambda m: print(m, file=sys.stderr))
    progress, bar = progress_printer(args, options.iterations)
    t0 = time.perf_counter()
    try:
        results = edit_strengths(args.reference, strengths, options, mask=args.mask, progress=progress, log=log,
                                 backbone=session.model(options), cancel=session.cancel)
    finally:
        if bar is not None:
            bar.close()
    for out, result in zip(outs, results, strict=True):
        result.save(out, sidecar=not args.no_sidecar)
        msg = (f"wrote {out} (strength {result.settings['strength']:g}, dlib identity distance reference->result "
               f"{result.descriptor_distance:.3f})")
        if args.json_progress:
            print(json.dumps({"event": "done", "output": str(out), "message": msg, **result.remarks()}), flush=True)
        elif not args.quiet:
            print(msg)
            for note in result.notes + result.advice:
                print(f"note: {note}")
    if args.debug_dir:
        write_debug(results[-1], args.debug_dir)
    if not args.quiet and not args.json_progress:
        print(f"{len(results)} file(s) in {time.perf_counter() - t0:.1f} s")
    return 0
