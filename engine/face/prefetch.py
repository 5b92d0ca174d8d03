"""Faces found by a helper process while a new command imports torch.

A cold `python -m engine edit` spends ~1.3 s importing torch on one core, then ~1 s finding faces (dlib's
landmark model, HOG), which needs no torch at all. On a machine with a second core a helper process runs the
same `find_face` calls on the same decoded pixels meanwhile and hands back what engine/face/detect.py caches by
content (the pixels' hash, the detector, the search scale); the edit's first face search that misses the cache
waits for the helper and takes its results (`detect.expect`).

Nothing depends on the helper: if it fails, is killed or decodes different pixels, the cache simply has no
entry and the edit detects as it always did. It ends with the command: `searching` stops it when its block
ends, and the helper exits by itself when the command's process is gone (its stdin pipe closes).

Child protocol: `python -m engine.face.prefetch JOBS` takes a JSON list of jobs and writes one JSON object
on stdout: {"found": [[key, faces], ...]}; errors are the parent's to find and tell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.project import PROJECT


@dataclass(frozen=True)
class FaceJob:
    """One photo's face search, with the arguments the edit will give find_face."""
    path: str
    detector: str = "hog"
    index: int | None = None
    box: tuple[float, float, float, float] | None = None


def worth_it() -> bool:
    """A helper only pays where it gets a core of its own: two CPUs this process may run on, and a cgroup quota
    (a container's `--cpus`) of at least two."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cgroup_cpus()) >= 2


def cgroup_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """The CPUs a cgroup v2 quota allows ("max" or no file: no limit)."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return float("inf") if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return float("inf")


class Prefetch:
    """A running helper; `collect()` waits for it and fills detect.py's cache."""

    def __init__(self, jobs: list[FaceJob]):
        flags = subprocess._args_from_interpreter_flags()  # -I, -E, -s...: the same engine and libraries
        self.process = subprocess.Popen(
            [sys.executable, *flags, "-m", "engine.face.prefetch", json.dumps([asdict(j) for j in jobs])],
            cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def collect(self) -> int:
        """Wait for the helper and remember its faces; how many searches it gave (0 when it failed)."""
        from engine.face.detect import remember

        try:
            out = self.process.stdout.read()
            self.process.wait()
            if self.process.returncode != 0:
                return 0
            return remember(json.loads(out)["found"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


def start(jobs: list[FaceJob]) -> Prefetch | None:
    """A helper for `jobs`, or None where it would not pay (one core) or cannot start."""
    if not jobs or not worth_it():
        return None
    try:
        return Prefetch(jobs)
    except OSError:
        return None


@contextmanager
def searching(jobs: list[FaceJob]) -> Iterator[Prefetch | None]:
    """A helper searching for `jobs`' faces during the block, offered to the block's first face search that
    misses the cache; stopped when the block ends, whatever happens."""
    from engine.face import detect

    helper = start(jobs)
    detect.expect(helper)
    try:
        yield helper
    finally:
        detect.expect(None)
        if helper is not None:
            helper.stop()


def _exit_with_parent() -> None:
    """The parent holds our stdin open and never writes: end of file means it is gone. (os.read: no buffered
    reader whose lock the interpreter's shutdown would wait for.)"""
    while os.read(0, 4096):
        pass
    os._exit(1)


def _child() -> int:
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    from engine.face.detect import find_face, remembered
    from engine.io.images import load_photo

    for job in json.loads(sys.argv[1]):
        try:
            box = tuple(job["box"]) if job["box"] is not None else None
            find_face(load_photo(job["path"]).rgb8(), job["detector"], job["index"], box)
        except Exception:  # no face, unreadable, a dlib error: the edit finds and tells it; the others still count
            pass
    sys.stdout.write(json.dumps({"found": remembered()}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os._exit(_child())  # the reading thread never ends by itself
