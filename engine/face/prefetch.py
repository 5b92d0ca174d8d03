"""Faces found by a helper process while a new command imports torch.

A cold `python -m engine edit` spends ~1.3 s importing torch on one core, then ~1 s finding faces (dlib's
landmark model, HOG), which needs no torch at all. On a machine with a second core a helper process runs the
same `find_face` calls on the same decoded pixels meanwhile and hands back what engine/face/detect.py caches by
content (the pixels' hash, the detector, the search scale), so the edit finds its faces in that cache.

Nothing depends on the helper: if it fails, is killed or decodes different pixels, the cache simply has no
entry and the edit detects as it always did. Only a command's own process starts it (a warm engine has
its faces cached already).

Child protocol: `python -m engine.face.prefetch JOBS` takes a JSON list of jobs and writes one JSON object
on stdout: {"found": [[key, faces], ...]}; errors are the parent's to find and tell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FaceJob:
    """One photo's face search, with the arguments the edit will give find_face."""
    path: str
    detector: str = "hog"
    index: int | None = None
    box: tuple[float, float, float, float] | None = None


def worth_it() -> bool:
    """A helper only pays where it gets a core of its own."""
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # not on Linux
        return (os.cpu_count() or 1) >= 2


class Prefetch:
    """A running helper; `collect()` waits for it and fills detect.py's cache."""

    def __init__(self, jobs: list[FaceJob]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.face.prefetch", json.dumps([asdict(j) for j in jobs])], cwd=PROJECT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C at the terminal is the parent's to handle; it stops the helper

    def collect(self, timeout: float = 120.0) -> int:
        """Wait for the helper and remember its faces; how many searches it gave (0 when it failed)."""
        from engine.face.detect import remember

        try:
            out, _ = self.process.communicate(timeout=timeout)
            if self.process.returncode != 0:
                return 0
            found = json.loads(out)["found"]
            return remember(found)
        except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(jobs: list[FaceJob]) -> Prefetch | None:
    """A helper for `jobs`, or None where it would not pay (one core) or cannot start."""
    if not jobs or not worth_it():
        return None
    try:
        return Prefetch(jobs)
    except OSError:
        return None


def _child() -> int:
    from engine.errors import FATError
    from engine.face.detect import find_face, remembered
    from engine.io.images import load_photo

    for job in json.loads(sys.argv[1]):
        try:
            box = tuple(job["box"]) if job["box"] is not None else None
            find_face(load_photo(job["path"]).rgb8(), job["detector"], job["index"], box)
        except FATError:  # no face, too small, unreadable: the edit finds and tells it
            pass
    sys.stdout.write(json.dumps({"found": remembered()}))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
