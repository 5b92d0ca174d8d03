"""`python -m engine`: the command line. Errors -> one message + a documented exit code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.errors import EXIT_CANCELLED, EXIT_INTERNAL, EXIT_USAGE, FATError
from engine.masks import region_names


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit code 2 with our wording, via FATError
        raise FATError(f"{message}. See `python -m engine {self.prog.split()[-1]} --help`.", EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m engine", description="Face attribute transfer (Li, Zuo, Zhang 2016).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    e = sub.add_parser("edit", help="give the reference face the guide's attribute in one region",
                       description="Edit REF so its REGION looks like the guide's, keeping the person's identity.")
    e.add_argument("reference", type=Path, help="photo to edit (never overwritten)")
    e.add_argument("--guide", type=Path, required=True, help="photo of a face with the wanted attribute")
    e.add_argument("--region", default="mouth", choices=region_names(), help="face region to change (default mouth)")
    e.add_argument("--mask", type=Path, help="PNG mask the size of REF (white = edit); overrides --region")
    e.add_argument("-o", "--output", type=Path, required=True, help="result image (.png, .jpg, .tif, .webp)")
    e.add_argument("--strength", type=float, default=1.0,
                   help="0..2: 0 = unchanged, 0.5 = halfway, 1 = the guide's (default), >1 pushes the features further")
    e.add_argument("--init", default="composite", choices=["composite", "seamless", "feathered", "reference", "noise"],
                   help="starting image (default composite: the guide's region, Poisson-blended at its edge)")
    e.add_argument("--iterations", type=int, default=60, help="optimisation steps (0 = composite only)")
    e.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    e.add_argument("--backbone", help="vggface, dlib-resnet, or a spec .json (default: vggface if installed)")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--face", type=int, help="which face in REF when there are several (0 = largest)")
    e.add_argument("--guide-face", type=int, help="which face in the guide (0 = largest)")
    e.add_argument("--box", type=float, nargs=4, metavar=("L", "T", "R", "B"), help="edit the face inside this box")
    e.add_argument("--detector", default="hog", choices=["hog", "cnn"])
    e.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override an optimisation weight (identity, attribute, tv, colour, gram, change, keep, "
                        "luma_grid, chroma_grid); repeatable")
    e.add_argument("--debug-dir", type=Path, help="write overlays and side-by-sides here")
    e.add_argument("--no-sidecar", action="store_true", help="do not write OUTPUT.json")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--json-progress", action="store_true", help="JSON lines on stdout (for the GIMP plug-in)")
    return p


class ProgressBar:
    """tqdm bar created at the first step, so that face finding and alignment are not counted in it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __call__(self, p) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="optimising", unit="step", file=sys.stderr, leave=False)
        self.bar.n = min(p.step, self.total)
        self.bar.set_postfix(loss=f"{p.losses.get('total', 0):.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_printer(args, total: int):
    """(callback, closer): JSON lines, a progress bar, or nothing."""
    if args.json_progress:
        def emit(p):
            print(json.dumps({"event": "progress", "step": p.step, "total": p.total,
                              "losses": p.losses, "elapsed": round(p.elapsed, 3)}), flush=True)
        return emit, None
    if args.quiet or total == 0:
        return None, None
    bar = ProgressBar(total)
    return bar, bar


def write_debug(result, out_dir: Path) -> None:
    import cv2
    import numpy as np

    from engine.debug import overlay, side_by_side, write_png

    f = result.frames
    h, w = result.photo.rgb.shape[:2]
    photo_mask = cv2.warpAffine(f.mask, f.ref.transform, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    write_png(out_dir / "reference-overlay.png", overlay(result.photo.rgb8(), f.ref.face.box, f.ref.face.landmarks,
                                                         photo_mask))
    write_png(out_dir / "guide-overlay.png", overlay(result.guide.rgb8(), f.guide.face.box, f.guide.face.landmarks))
    c = result.crops
    mask_rgb = np.repeat(result.mask[..., None] * 255, 3, axis=2)
    write_png(out_dir / "crops.png", side_by_side([c["reference"], c["guide"], c["init"], c["result"], mask_rgb]))
    write_png(out_dir / "before-after.png", side_by_side([result.photo.rgb8(), result.rgb8()], 720))


def parse_weights(items: list[str]):
    from dataclasses import fields

    from engine.optimise import Weights

    names = {f.name for f in fields(Weights)}
    values: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in names:
            raise FATError(f"--set {item}: unknown weight {name!r}; known: {', '.join(sorted(names))}.", EXIT_USAGE)
        try:
            values[name] = float(value)
        except ValueError:
            raise FATError(f"--set {item}: {value!r} is not a number.", EXIT_USAGE) from None
        if values[name] < 0:
            raise FATError(f"--set {item}: weights must be >= 0.", EXIT_USAGE)
    return Weights(**values)


def cmd_edit(args) -> int:
    from engine.api import edit
    from engine.imageio import check_output_path

    check_output_path(args.output, [args.reference, args.guide, args.mask])
    log = (lambda m: None) if args.quiet and not args.json_progress else (lambda m: print(m, file=sys.stderr))
    progress, bar = _progress_printer(args, args.iterations)
    t0 = time.perf_counter()
    try:
        result = edit(args.reference, guide=args.guide, region=args.region, strength=args.strength, init=args.init,
                      iterations=args.iterations, optimizer=args.optimizer, seed=args.seed, backbone=args.backbone,
                      device=args.device, face=args.face, guide_face=args.guide_face,
                      box=tuple(args.box) if args.box else None, mask=args.mask, detector=args.detector,
                      weights=parse_weights(args.set), progress=progress, log=log)
    finally:
        if bar is not None:
            bar.close()
    result.save(args.output, sidecar=not args.no_sidecar)
    if args.debug_dir:
        write_debug(result, args.debug_dir)
    msg = (f"wrote {args.output} in {time.perf_counter() - t0:.1f} s (backbone {result.settings['backbone']}, "
           f"dlib identity distance reference->result {result.descriptor_distance:.3f})")
    if args.json_progress:
        print(json.dumps({"event": "done", "output": str(args.output), "message": msg}), flush=True)
    elif not args.quiet:
        print(msg)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bridge"]:  # the GIMP plug-in's JSON protocol (engine/bridge.py)
        from engine.bridge import main as bridge_main

        return bridge_main(argv[1:])
    try:
        args = parser().parse_args(argv)
        return {"edit": cmd_edit}[args.command](args)
    except FATError as e:
        print(f"error: {e}", file=sys.stderr)
        if "--json-progress" in argv:
            print(json.dumps({"event": "error", "exit_code": e.exit_code, "message": str(e)}), flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: cancelled.", file=sys.stderr)
        return EXIT_CANCELLED
    except MemoryError:
        print("error: out of memory; use a smaller image or fewer iterations.", file=sys.stderr)
        return EXIT_INTERNAL
