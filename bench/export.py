"""Export time and peak memory for a full-size VGG-Face file (target <= 30 s, <= 3 GB).

    .venv/bin/python -m bench.export [--format pytorch|caffe|keras|matconvnet|torch7]

Writes a synthetic full-size file in the chosen published layout, then runs
`python -m export` on it in a child process and reports its wall time and peak
resident memory, with ratios to the targets, from this one run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S, TARGET_GB = 30.0, 3.0
EXPORT = """
import resource, sys
from export.cli import main
code = main(sys.argv[1:])
print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""
LAYOUTS = ["caffe", "keras", "matconvnet", "matconvnet-toplevel", "matconvnet-v73", "pytorch", "torch7"]
# The synthetic file is written by a child process: ru_maxrss carries over a fork, so the
# parent that runs the export must stay small for the child's peak to be the export's own.
WRITE = """
import sys; from pathlib import Path
from tests.weightfiles import WRITERS, random_state
files = WRITERS[sys.argv[1]](random_state(widths=(64, 128, 256, 512, 512), fc_width=4096), Path(sys.argv[2]))
print("\\n".join(map(str, files)))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--format", default="pytorch", choices=LAYOUTS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = [Path(f) for f in subprocess.check_output([sys.executable, "-c", WRITE, args.format, str(d)],
                                                          text=True).split()]
        size = sum(f.stat().st_size for f in files) / 1e6
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", EXPORT, *map(str, files), "--out", str(d / "v.onnx")],
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        code = out.returncode
        print(out.stdout + out.stderr)
        peak_gb = int(out.stdout.strip().splitlines()[-1].split()[-1]) * 1024 / 1e9  # ru_maxrss is in KiB
    print(f"format {args.format}: source {size:.0f} MB, exit {code}")
    print(f"export wall time {wall:.1f} s (ratio to {TARGET_S:.0f} s target: {wall / TARGET_S:.2f})")
    print(f"peak resident memory {peak_gb:.2f} GB (ratio to {TARGET_GB:.0f} GB target: {peak_gb / TARGET_GB:.2f})")


if __name__ == "__main__":
    main()
