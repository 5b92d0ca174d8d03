#!/usr/bin/env python3
"""One-command setup for face-attribute-transfer (standard library only).

    python3 install.py            set up, then run the main job on a bundled example
    python3 install.py --test     set up, then run the whole test suite (what CI runs)

Idempotent: a second run checks stamps and hashes and takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

from engine.io.files import sha256_file, user_cache  # standard library only, like this script
from export.formats import download_names  # the weights-format registry, standard library only

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MODELS = ROOT / "models"
REQUIREMENTS = ROOT / "requirements.txt"
STAMP = VENV / ".fat-requirements.sha256"
USER_CACHE = user_cache()
VGGFACE_NAMES = download_names()
# Where the publishers put VGG-Face (no checksums are published: export verifies the
# structure and records the sha256). Override with FAT_VGGFACE_URLS (space-separated).
VGGFACE_URLS = (
    "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_vgg16.h5",
    "http://www.robots.ox.ac.uk/~vgg/software/vgg_face/src/vgg_face_caffe.tar.gz",
)
GIMP_PLUGIN = "face-attribute-transfer"


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str | Path], **kw) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def ensure_venv() -> None:
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if venv_python().exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        step(f"dependencies: up to date in {VENV}")
        return
    if not venv_python().exists():
        step(f"creating virtual environment {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    step("installing pinned dependencies (first time: a few minutes, ~6 GB)")
    # No wheel cache: where the wheels come from PyPI rather than this disk, a cached copy of torch's CUDA wheels
    # would double the space the install needs.
    pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "-q"]
    code = run([*pip, "-r", REQUIREMENTS])
    if code != 0:
        sys.exit(f"error: pip failed (exit {code}); check the network/proxy and the free disk space "
                 "(about 6 GB for the environment) and rerun `python3 install.py`.")
    STAMP.write_text(want + "\n")


def export_ok(name: str) -> bool:
    """True when models/NAME.json exists and its ONNX file still has the recorded hash."""
    spec_path = MODELS / f"{name}.json"
    try:
        spec = json.loads(spec_path.read_text())
        return sha256_file(MODELS / spec["onnx"]) == spec["onnx_sha256"]
    except (OSError, ValueError, KeyError):
        return False


def export(args: list[str | Path]) -> None:
    code = run([venv_python(), "-m", "export", *args])
    if code != 0:
        sys.exit(f"error: export failed (exit {code}); see the message above.")


def ensure_dlib_backbone() -> None:
    if export_ok("dlib-resnet"):
        step("backbone dlib-resnet: ready (models/dlib-resnet.onnx)")
        return
    step("exporting the offline backbone dlib-resnet (face_recognition_models) to models/dlib-resnet.onnx")
    export(["--dlib"])


def find_vggface_file() -> Path | None:
    for folder in (MODELS, USER_CACHE):
        for name in VGGFACE_NAMES:
            if (folder / name).is_file() and not (folder / (name + ".part")).exists():
                return folder / name
    return None


def download(url: str, dest: Path, timeout: float = 15.0) -> Path:
    """Resumable download with a progress line; raises OSError on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if have and resp.status != 206:
            have = 0  # server ignored the range: start again
        total = have + int(resp.headers.get("Content-Length", 0) or 0)
        with open(part, "ab" if have else "wb") as f:
            done, t0 = have, time.monotonic()
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                rate = (done - have) / max(time.monotonic() - t0, 1e-6) / 1e6
                pct = f"{100 * done / total:5.1f}%" if total else ""
                print(f"\r    {dest.name}: {done / 1e6:7.1f} MB {pct} {rate:5.1f} MB/s", end="", flush=True)
        print()
    os.replace(part, dest)
    return dest


def obtain_vggface(weights: Path | None, offline: bool) -> Path | None:
    if weights:
        return weights
    found = find_vggface_file()
    if found:
        return found
    if offline:
        return None
    urls = os.environ.get("FAT_VGGFACE_URLS", " ".join(VGGFACE_URLS)).split()
    for url in urls:
        step(f"downloading VGG-Face from {url}")
        try:
            return download(url, USER_CACHE / url.rsplit("/", 1)[-1])
        except (OSError, urllib.error.URLError, ValueError) as e:
            print(f"    failed: {getattr(e, 'reason', e)}")
    return None


def ensure_vggface(weights: Path | None, offline: bool) -> None:
    if weights is None and export_ok("vggface"):
        step("backbone vggface: ready (models/vggface.onnx)")
        return
    src = obtain_vggface(weights, offline)
    if src is None:
        step("VGG-Face weights not found; using the offline backbone dlib-resnet meanwhile.\n"
             "    To add VGG-Face, download one of the published files (README, 'VGG-Face weights'), e.g.\n"
             "    vgg_face_dag.pth or vgg_face_caffe.tar.gz, then run: python3 install.py --weights FILE")
        return
    step(f"exporting VGG-Face from {src} to models/vggface.onnx")
    export([src, "--out", MODELS / "vggface.onnx"])


def gimp_plugin_dirs() -> list[Path]:
    home = Path.home()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [config / "GIMP/3.0/plug-ins", home / "Library/Application Support/GIMP/3.0/plug-ins",
            Path(os.environ.get("APPDATA", home)) / "GIMP/3.0/plug-ins"]


def gimp_installed() -> bool:
    """GIMP 3 is on this machine even if it has never been started (its user folder does not exist yet)."""
    return any(shutil.which(name) for name in ("gimp-3.0", "gimp-3", "gimp"))


def install_gimp_plugin(uninstall: bool = False) -> None:
    src = ROOT / "plugin" / GIMP_PLUGIN
    target_root = Path(os.environ["FAT_GIMP_PLUGIN_DIR"]) if "FAT_GIMP_PLUGIN_DIR" in os.environ else None
    targets = [target_root] if target_root else [d for d in gimp_plugin_dirs() if d.parent.exists()]
    if not targets and not uninstall and gimp_installed():  # GIMP never started yet: its folder is created here
        targets = gimp_plugin_dirs()[:1]
    if uninstall:
        for t in targets:
            if (t / GIMP_PLUGIN).exists():
                shutil.rmtree(t / GIMP_PLUGIN)
                step(f"removed GIMP plug-in from {t / GIMP_PLUGIN}")
        return
    if not (src / f"{GIMP_PLUGIN}.py").exists():
        step("GIMP plug-in: not part of this version yet; skipped")
        return
    if not targets:
        step("GIMP 3 user folder not found (start GIMP 3 once, or set FAT_GIMP_PLUGIN_DIR); plug-in skipped")
        return
    for t in targets:
        dest = t / GIMP_PLUGIN
        dest.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, dest / f.name)
        os.chmod(dest / f"{GIMP_PLUGIN}.py", 0o755)
        (dest / "config.json").write_text(json.dumps({"python": str(venv_python()), "project": str(ROOT)}) + "\n")
        step(f"installed GIMP plug-in into {dest}")


def ensure_default_banks() -> None:
    """The small default attribute bank per installed backbone, from the photos in examples/ (only photos the
    project may ship); `bank build` processes only photos not yet in it, so a second run takes seconds."""
    for name in ("dlib-resnet", "vggface"):
        if not (MODELS / f"{name}.json").exists():
            continue
        bank = MODELS / f"bank-{name}.npz"
        cmd = [venv_python(), "-m", "engine", "bank", "build", ROOT / "examples", "-o", bank, "--labels",
               ROOT / "examples" / "labels.csv", "--backbone", name, "--all-faces", "--quiet"]
        step(f"default attribute bank for {name}: {bank}")
        code = run(cmd)
        if code in (3, 5):  # damaged, or built with another export of the backbone: rebuild it
            bank.unlink(missing_ok=True)
            code = run(cmd)
        if code != 0:
            sys.exit(f"error: building the default attribute bank failed (exit {code}); see the message above.")


def main_job() -> int:
    out = ROOT / "out"
    step("main job: face attribute transfer on the bundled example (mouth of examples/obama_1.jpg "
         "onto examples/biden_1.jpg)")
    code = run([venv_python(), "-m", "engine", "edit", "examples/biden_1.jpg", "--guide", "examples/obama_1.jpg",
                "--region", "mouth", "-o", out / "example-edit.png", "--debug-dir", out / "debug"])
    if code == 0:
        step(f"done: result in {out / 'example-edit.png'} (side-by-side in {out / 'debug'})")
    return code


def run_tests(extra: list[str]) -> int:
    step("lint: ruff check")
    lint = run([venv_python(), "-m", "ruff", "check", "."])
    step("tests: pytest")
    code = run([venv_python(), "-m", "pytest", *extra])
    if code == 5:
        print("error: pytest collected no tests; that is a failure here.", file=sys.stderr)
        return 1
    return code or lint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, help="a VGG-Face file in any supported format (or a publisher's .tar.gz)")
    p.add_argument("--test", action="store_true", help="set up, then run ruff and the whole test suite")
    p.add_argument("--offline", action="store_true", help="never try to download VGG-Face")
    p.add_argument("--no-gimp", action="store_true", help="do not install the GIMP 3 plug-in")
    p.add_argument("--uninstall", action="store_true", help="remove the GIMP plug-in and exit")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments with --test (after --)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.uninstall:
        install_gimp_plugin(uninstall=True)
        return 0
    if args.weights and not args.weights.exists():
        sys.exit(f"error: --weights {args.weights}: no such file.")
    ensure_venv()
    ensure_dlib_backbone()
    ensure_vggface(args.weights.resolve() if args.weights else None, offline=args.offline or args.test)
    ensure_default_banks()
    if not args.no_gimp:
        install_gimp_plugin()
    if args.test:
        return run_tests(args.pytest_args)
    return main_job()


if __name__ == "__main__":
    sys.exit(main())
