"""`python -m export`: any supported weights file -> models/NAME.onnx + NAME.json."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine.errors import EXIT_CANCELLED, EXIT_INTERNAL, EXIT_USAGE, FATError, internal_error_message
from export.detect import unpacked_sources
from export.onnx_writer import export_backbone

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = PROJECT / "models"
EXAMPLE = PROJECT / "examples" / "obama_1.jpg"


def example_images() -> list[np.ndarray]:
    """A real photo for verification (the committed public-domain example)."""
    if not EXAMPLE.exists():
        return []
    im = ImageOps.exif_transpose(Image.open(EXAMPLE)).convert("RGB")
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 4
    return [np.asarray(im.crop((left, top, left + side, top + side)))]


def export_vggface(sources: list[Path], out: Path, with_fc: bool = True, log=print) -> dict:
    from export import vggface

    with unpacked_sources(sources) as (fmt, files):  # an archive's unpacked files are removed at the end
        log(f"VGG-Face: reading {', '.join(str(f) for f in files)} as {fmt}")
        t0 = time.perf_counter()
        state = vggface.load_canonical(fmt, files)
        log(f"  canonical weights: {len(state)} tensors, {sum(v.size for v in state.values()) / 1e6:.1f} M "
            f"parameters ({time.perf_counter() - t0:.1f} s)")
        spec = vggface.vggface_spec(fmt, files, with_fc)
    net = vggface.build_model(state)
    del state
    return export_backbone(net, taps=vggface.vgg_taps(with_fc), input_size=(224, 224), out=out,
                           spec=spec, real_images=example_images(), log=log)


def export_dlib(dat: Path | None, out: Path, log=print) -> dict:
    from export import dlib_backbone

    dat = dat or dlib_backbone.default_dat_path()
    log(f"dlib-resnet: reading {dat}")
    net = dlib_backbone.build_model(dlib_backbone.load_canonical(dat))
    return export_backbone(net, taps=dlib_backbone.dlib_taps(), input_size=(150, 150), out=out,
                           spec=dlib_backbone.dlib_spec(dat), real_images=example_images(), log=log)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Convert VGG-Face (Caffe, Torch7, MatConvNet, PyTorch, Keras, or the publishers' "
                    ".tar.gz) or dlib's face-recognition ResNet (.dat) to ONNX plus a JSON spec.")
    p.add_argument("sources", nargs="*", type=Path,
                   help="weights file(s); for Caffe the .caffemodel and optionally its .prototxt")
    p.add_argument("--dlib", action="store_true",
                   help="export dlib's ResNet (from face_recognition_models unless a .dat is given)")
    p.add_argument("--out", type=Path, help="ONNX path (default models/vggface.onnx or models/dlib-resnet.onnx)")
    p.add_argument("--no-fc", action="store_true", help="omit fc6-fc8 from the VGG-Face ONNX (smaller file)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an internal error")
    return p


def _cancel(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that every finally-block runs (temp files are
    removed, the previous model stays in place) and the CLI exits 6 with a message."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _cancel) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def run(args: argparse.Namespace, log) -> None:
    is_dat = len(args.sources) == 1 and args.sources[0].suffix == ".dat"
    if args.dlib or is_dat:
        export_dlib(args.sources[0] if args.sources else None, args.out or DEFAULT_MODELS / "dlib-resnet.onnx", log)
    elif args.sources:
        if len(args.sources) > 2:
            raise FATError("give one weights file (two for Caffe: .caffemodel and .prototxt).", EXIT_USAGE)
        export_vggface(args.sources, args.out or DEFAULT_MODELS / "vggface.onnx", not args.no_fc, log)
    else:
        parser().print_usage(sys.stderr)
        raise FATError("nothing to export: give a VGG-Face weights file, or --dlib.", EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = (lambda *a, **k: None) if args.quiet else print
    with cancel_on_signals():
        try:
            run(args, log)
        except FATError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print("error: cancelled (the model files in the output folder are still a usable pair).", file=sys.stderr)
            return EXIT_CANCELLED
        except MemoryError:
            print("error: out of memory while converting; close other programs and retry.", file=sys.stderr)
            return EXIT_INTERNAL
        except Exception as e:  # noqa: BLE001 - a bug: one line (traceback with --verbose), exit 70
            print(f"error: {internal_error_message(e, args.verbose)}", file=sys.stderr)
            return EXIT_INTERNAL
    return 0
