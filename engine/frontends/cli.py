"""`python -m engine`: the command line. Errors -> one message + a documented exit code."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from engine.errors import EXIT_USAGE, FATError, deferred_interrupts, describe_failure
from engine.options import EditOptions, cli_flag, option_kind
from engine.project import PROJECT


@dataclass(frozen=True)
class Session:
    """What the process running a command lends it: a warm engine service (engine/frontends/service.py) its loaded
    models (options -> Backbone) and the client's cancel token; this process (HERE) nothing."""

    model: Callable
    cancel: object


HERE = Session(model=lambda _options: None, cancel=None)  # this process: it loads its own models; Ctrl-C cancels


NUMBER_LIST = re.compile(r"^-(\d+\.?\d*|\.\d+)(,-?(\d+\.?\d*|\.\d+))*$")  # -1,0.5,1.5 (a negative first value)


def joined_number_lists(argv: list[str]) -> list[str]:
    """`--strength -1,0.5` as `--strength=-1,0.5`: argparse takes a value that starts with "-" and is not one plain
    negative number for an option and refuses the command ("expected one argument"), though the README's
    several-strengths edit is what a user types."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] == "--strength" and NUMBER_LIST.match(token):
            out[-1] = f"--strength={token}"
        else:
            out.append(token)
    return out


class Parser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(joined_number_lists(list(sys.argv[1:] if args is None else args)),
                                        namespace)

    def error(self, message: str):  # exit code 2 with our wording, via FATError
        raise FATError(f"{message}. See `python -m engine {self.prog.split()[-1]} --help`.", EXIT_USAGE)


def add_edit_options(p: argparse.ArgumentParser) -> None:
    """One flag per EditOptions field (engine/options.py); defaults stay None here so that the schema
    remains the only place that knows them (and `--mask` can tell an explicit --region)."""
    for f in fields(EditOptions):
        meta, kind = f.metadata, option_kind(f)
        default = f.default if f.default is not MISSING else None
        help_text = meta["help"] + (f" (default {default})" if default not in (None, {}) else "")
        kw: dict = {"dest": f.name, "default": None, "help": help_text}
        if meta["choices"]:
            kw["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        if kind is dict:
            kw.update(action="append", metavar=meta["metavar"])
        elif kind is tuple:
            kw.update(type=float, nargs=meta["nargs"], metavar=tuple(meta["metavar"].split()))
        else:
            kw["type"] = {"int": int, "float": float}.get(kind.__name__, str)
        if f.name == "strength":  # S or S1,S2,... (several: an attribute edit writes one file each)
            kw.update(type=strength_list, metavar="S[,S2,...]")
        p.add_argument(cli_flag(f), **kw)


def strength_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers") from None


def parse_overrides(items: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise FATError(f"--set {item}: expected NAME=VALUE, e.g. --set identity=5.", EXIT_USAGE)
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise FATError(f"--set {item}: {value!r} is not a number.", EXIT_USAGE) from None
    return values


def options_from_args(args: argparse.Namespace) -> EditOptions:
    """The command line's EditOptions, validated (no model or image is touched)."""
    values = {f.name: getattr(args, f.name) for f in fields(EditOptions) if getattr(args, f.name) is not None}
    if "overrides" in values:
        values["overrides"] = parse_overrides(values["overrides"])
    args.strengths = list(values.get("strength", ()))
    if args.strengths:
        values["strength"] = args.strengths[0]
    if len(args.strengths) > 1 and values.get("attribute") is None:
        raise FATError("several strengths (--strength S1,S2,...) need --attribute.", EXIT_USAGE)
    return EditOptions.from_mapping(values, "command line").with_mask(args.mask is not None)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m engine", description="Face attribute transfer (Li, Zuo, Zhang 2016).",
               epilog="Also: `python -m engine bench --help` (speed on this machine).")
    p.add_argument("--verbose", action="store_true", help="print a traceback for internal errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    e = sub.add_parser("edit", help="give the reference face the guide's attribute in one region",
                       description="Edit REF so its REGION looks like the guide's, keeping the person's identity.")
    e.add_argument("reference", type=Path, help="photo to edit (never overwritten)")
    e.add_argument("--guide", type=Path, help="photo of a face with the wanted attribute (or use --attribute)")
    e.add_argument("-o", "--output", type=Path, required=True, help="result image (.png, .jpg, .tif, .webp)")
    e.add_argument("--mask", type=Path, help="image the size of REF, white = edit: the edit region itself")
    add_edit_options(e)
    e.add_argument("--debug-dir", type=Path, help="write overlays and side-by-sides here")
    e.add_argument("--no-sidecar", action="store_true", help="do not write OUTPUT.json")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--json-progress", action="store_true", help="JSON lines on stdout (for scripts)")
    e.add_argument("--no-service", action="store_true",
                   help="edit in this process even when a warm engine service is running (also FAT_NO_SERVICE=1)")
    e.add_argument("--keep-warm", action="store_true",
                   help="start the warm engine service when none is running, edit there, and leave it running for "
                        "the next commands (it exits after 10 idle minutes; `python -m engine serve --stop`)")
    e.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="print a traceback for internal errors")
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
        if p.total and p.total != self.bar.total:  # a stage that stalls ends early: the total shrinks
            self.bar.total = p.total
        self.bar.n = min(p.step, self.bar.total)
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
    import numpy as np

    from engine.io.debug import overlay, side_by_side, write_png
    from engine.io.paths import DEBUG_FILES

    f = result.frame
    photo_mask = f.photo_mask(result.photo.rgb.shape[:2])
    c = result.crops
    mask_rgb = np.repeat(result.mask[..., None] * 255, 3, axis=2)
    pictures = {  # the names are DEBUG_FILES, which check_inputs checks before the edit
        "reference-overlay.png": lambda: overlay(result.photo.rgb8(), f.ref.face.box, f.ref.face.landmarks,
                                                 photo_mask),
        "guide-overlay.png": lambda: overlay(result.guide.rgb8(), f.guide.face.box, f.guide.face.landmarks),
        "crops.png": lambda: side_by_side([c["reference"], c["guide"], c["init"], c["result"], mask_rgb]),
        "before-after.png": lambda: side_by_side([result.photo.rgb8(), result.rgb8()], 720),
    }
    for name in DEBUG_FILES:
        write_png(out_dir / name, pictures[name]())


def check_inputs(args) -> None:
    """Cheap checks before anything loads: the inputs are image files within the size limits (headers only,
    nothing decoded), the outputs and --debug-dir can be written and replace no input. Then says what the
    output type cannot keep (a 16-bit photo saved as .jpg is scaled to 8 bits)."""
    from engine.io.paths import DEBUG_FILES, check_output_folder, check_output_path, check_readable

    named = [(p, what) for p, what in ((args.reference, "reference"), (args.guide, "--guide"), (args.mask, "--mask"))
             if p is not None]
    for path, what in named:
        check_readable(path, what)
    inputs = [p for p, _ in named]
    check_output_path(args.output, inputs, sidecar=not args.no_sidecar)
    if args.debug_dir is not None:
        written = [args.output] + ([] if args.no_sidecar else [args.output.with_suffix(".json")])
        check_output_folder(args.debug_dir, DEBUG_FILES, inputs, "--debug-dir", written)
    from engine.io.images import probe_image, save_notes  # headers only; after the path checks (no cv2 before)

    info = {what: probe_image(path, what) for path, what in named}
    if not args.quiet:
        for note in save_notes(info["reference"].bits, info["reference"].alpha, args.output):
            print(f"note: {note}", file=sys.stderr)
        for path, what in named:
            if info[what].frames > 1:  # an animated GIF or a multi-page TIFF: said, not silently cut
                print(f"note: {path} holds {info[what].frames} frames or pages; only the first is "
                      f"{'edited, and the result holds that one' if what == 'reference' else 'used'}.",
                      file=sys.stderr)


def parser_exit(argv: list[str]) -> int | None:
    """The exit code when parsing the command line alone ends the command (`--help`), else None. A warm service
    asks before running a client's command, since argparse ends such a command with SystemExit."""
    try:
        parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except FATError:  # a usage error: main() tells it
        pass
    return None


def through_service(argv: list[str], start: bool = False) -> int | None:
    """Hand the edit to a running warm engine service (`python -m engine serve`, or the one GIMP started): it has
    torch, the detectors and the models loaded, so a new shell command starts optimising at once. Its exit code,
    or None when no service answers, it refuses (other engine code, another environment, busy, an older service)
    or it stops before the end: then edit here (outputs are written atomically, so nothing half-done is left)."""
    from engine.frontends import service_client as client

    if start:  # --keep-warm: this command pays the start-up, the next ones find the engine loaded
        try:
            client.ensure_service(sys.executable, str(PROJECT))
        except client.ServiceError as e:
            print(f"note: {e} Editing here instead.", file=sys.stderr)
            return None
    elif not client.socket_path().exists():  # the usual case: no service; not even the code stamp is computed
        return None

    def show(event: dict) -> None:
        if event.get("event") == "output":
            stream = sys.stdout if event.get("stream") == "stdout" else sys.stderr
            stream.write(str(event.get("text", "")))
            stream.flush()

    try:
        final = client.run_command(argv, show)
    except client.ServiceError as e:
        if e.reached:
            print(f"note: {e} Editing here instead.", file=sys.stderr)
        return None
    if final.get("event") != "exit":  # the service was stopped mid-edit: its "error" event says so
        print(f"note: {final.get('message', 'the engine service stopped')} Editing here instead.", file=sys.stderr)
        return None
    return int(final.get("exit_code", 70))


def face_search(args, options: EditOptions, session: Session) -> AbstractContextManager:
    """A cold command's faces, searched for by a helper process while this one imports torch
    (engine/face/prefetch.py), during the `with` block; nothing in a warm service or in a program that imports
    the engine (it keeps its own processes)."""
    import engine

    if session is not HERE or not engine.own_process:
        return nullcontext()
    from engine.face.prefetch import FaceJob, searching

    jobs = [FaceJob(str(Path(args.reference).resolve()), options.detector, options.face, options.box)]
    if args.guide is not None:
        jobs.append(FaceJob(str(Path(args.guide).resolve()), options.detector, options.guide_face))
    return searching(jobs)


def cmd_edit(args, session: Session = HERE) -> int:
    options = options_from_args(args)
    if options.attribute is not None or args.guide is None:  # mode B: an attribute bank (engine/bank/cli.py)
        from engine.bank.cli import cmd_attribute_edit

        return cmd_attribute_edit(args, options, check_inputs, _progress_printer, write_debug, session)
    check_inputs(args)
    with face_search(args, options, session):
        with deferred_interrupts():
            from engine.api import edit

        log = (lambda m: None) if args.quiet and not args.json_progress else (lambda m: print(m, file=sys.stderr))
        progress, bar = _progress_printer(args, options.iterations)
        t0 = time.perf_counter()
        try:
            result = edit(args.reference, guide=args.guide, options=options, mask=args.mask, progress=progress,
                          log=log, backbone=session.model(options), cancel=session.cancel)
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


def main(argv: list[str] | None = None, session: Session | None = None) -> int:
    """`session`: set when a warm engine service runs this command for a client."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bridge"]:  # the GIMP plug-in's JSON protocol (engine/bridge.py)
        from engine.frontends.bridge import main as bridge_main

        return bridge_main(argv[1:])
    if argv[:1] == ["serve"]:  # the warm engine for the plug-in (engine/frontends/service.py)
        return __import__("engine.frontends.service", fromlist=["main"]).main(argv[1:])
    try:
        if argv[:1] == ["bench"]:  # where an edit's time goes (engine/frontends/bench.py)
            from engine.frontends.bench import main as bench_main

            return bench_main(argv[1:])
        if argv[:1] == ["batch"]:  # recipes over many photos (engine/batch/cli.py)
            from engine.batch.cli import main as batch_main

            return batch_main(argv[1:], Parser)
        if argv[:1] == ["bank"]:  # attribute banks (engine/bank/cli.py)
            from engine.bank.cli import main as bank_main

            return bank_main(argv[1:], Parser)
        args = parser().parse_args(argv)
        if (session is None and args.command == "edit" and not args.no_service
                and os.environ.get("FAT_NO_SERVICE") != "1"):
            options_from_args(args)  # a usage error is told here, before any socket
            code = through_service(argv, start=args.keep_warm)
            if code is not None:
                return code
        return {"edit": cmd_edit}[args.command](args, session or HERE)
    except (Exception, KeyboardInterrupt) as e:  # a bug too: one line and exit 70, a traceback only on request
        code, message = describe_failure(e, verbose="--verbose" in argv)
        print(f"error: {message}", file=sys.stderr)
        if isinstance(e, BrokenPipeError):  # nothing more can go to stdout, not even Python's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return code
        if "--json-progress" in argv:
            print(json.dumps({"event": "error", "exit_code": code, "message": message}), flush=True)
        return code
