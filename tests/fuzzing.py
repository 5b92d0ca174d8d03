"""The harness the fuzz tests share (tests/test_fuzz_readers.py, tests/test_fuzz_inputs.py).

Seeded cases run in worker processes, so that a segfault, a hang or runaway memory is reported
with the case that caused it, and a fresh worker goes on from the next case. A test module
provides `_worker_main`, which the child runs as

    python -c "from <module> import _worker_main; _worker_main()" <name> <folder>

with its cases in <folder>/cases.json (thousands of case numbers may not fit a command line).
The child reports on stdout, one JSON line an event: `ready` once warmed up, then per case
`start`, followed by `done` (with its outcome) or `fail` (with the error and where it was raised).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_S = 120.0  # the wait for `ready`: imports and warming up are not a case, so not held to the hang limit


# --- the worker side --------------------------------------------------------------------------------------

def worker_args() -> tuple[str, Path, list[int]]:
    """The name (reader or target), folder and cases `start` handed this worker."""
    folder = Path(sys.argv[2])
    return sys.argv[1], folder, json.loads((folder / "cases.json").read_text())


def limit_address_space(headroom: int) -> None:
    """Cap this process at its present size plus `headroom`: a guard for the machine.

    A case allocating far more than its input needs then fails with MemoryError (reported
    with its case) instead of swapping. Import the large libraries first, so that their
    mappings count in the baseline.
    """
    with open("/proc/self/status") as f:
        size = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
    limit = size + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def emit(**record: object) -> None:
    """One event for the harness; flushed at once, so that a crash right after loses nothing."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def where(exc: BaseException) -> str:
    """file:line of the innermost frame, enough to tell two bugs apart in a report."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def run_case(case: int, what: str, call: Callable[[], object]) -> str | None:
    """Run one case after its `start` event: "ok" or "FATError <exit code>", or None once a `fail` is emitted.

    FATError is the one refusal a user sees as a message; every other exception is what the
    fuzzer looks for. The caller emits `done`, after any checks of its own (memory growth).
    """
    from engine.errors import FATError

    emit(event="start", case=case, what=what)
    try:
        call()
    except FATError as e:
        return f"FATError {e.exit_code}"
    except BaseException as e:  # noqa: BLE001 - every other exception is what the fuzzer looks for
        emit(event="fail", case=case, what=what, error=f"{type(e).__name__}: {str(e)[:200]}", where=where(e))
        return None
    return "ok"


# --- the harness ------------------------------------------------------------------------------------------

def start(module: str, name: str, folder: Path, cases: list[int],
          env: Mapping[str, str]) -> tuple[subprocess.Popen, queue.Queue]:
    """A worker running `module`'s _worker_main on `cases`, and a queue of its events (None when it ends).

    `env` is added to this environment (thread counts: parallel harnesses already fill the cores).
    The events are read on a thread so that the harness can wait for them with a timeout.
    """
    full_env = {**os.environ, **env,
                "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)}
    code = f"from {module} import _worker_main; _worker_main()"
    (folder / "cases.json").write_text(json.dumps(cases))
    with open(folder / "stderr.txt", "ab") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code, name, str(folder)],
                                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT,
                                env=full_env, text=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(json.loads(line))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def stop(proc: subprocess.Popen) -> None:
    """Kill the worker if it still runs, and reap it (its exit code is part of the report)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def run_cases(module: str, name: str, folder: Path, cases: list[int], *, env: Mapping[str, str],
              hang_s: float) -> tuple[list[dict], Counter]:
    """Run `cases`, starting a fresh worker after a crash, a hang or a memory failure (named with its case).

    A worker that dies with a non-zero exit between cases is reported against the case it
    finished last: a late crash, e.g. of a heap that case damaged.
    """
    failures: list[dict] = []
    outcomes: Counter = Counter()
    todo = list(cases)
    while todo:
        proc, lines = start(module, name, folder, todo, env)
        current = last = None
        ready, timeout = False, START_S
        try:
            while True:
                try:
                    rec = lines.get(timeout=timeout)
                except queue.Empty:
                    if current is None:
                        raise AssertionError(f"{name}: the fuzz worker stalled outside a case") from None
                    failures.append({**current, "error": f"hang (> {hang_s:g} s)"})
                    break
                if rec is None:  # the worker died
                    stop(proc)
                    if not ready:
                        err = (folder / "stderr.txt").read_text(errors="replace")[-2000:]
                        raise AssertionError(f"{name}: the fuzz worker failed to start:\n{err}")
                    if current is not None:
                        failures.append({**current, "error": f"process died (exit {proc.returncode})"})
                    elif last is not None and proc.returncode:
                        failures.append({**last, "error": f"process died after the case (exit {proc.returncode})"})
                    break
                event = rec.pop("event")
                if event == "ready":
                    ready, timeout = True, hang_s
                elif event == "start":
                    current = rec
                elif event == "done":
                    outcomes[rec["outcome"]] += 1
                    todo.remove(rec["case"])
                    last, current = {"case": rec["case"], "what": (current or {}).get("what", "")}, None
                elif event == "fail":
                    failures.append(rec)
                    todo.remove(rec["case"])
                    current = None
        finally:
            stop(proc)
        if current is not None:
            todo.remove(current["case"])
    return failures, outcomes


def fuzz(module: str, name: str, folder: Path, cases: list[int], *, env: Mapping[str, str], hang_s: float,
         workers: int = 2) -> tuple[list[dict], Counter]:
    """The cases split over `workers` parallel harnesses (one worker process each), failures sorted by case.

    An error of a harness itself (a worker that fails to start or stalls) is raised here, in the test's thread.
    """
    parts = [cases[i::workers] for i in range(workers)]
    results: list[tuple[list[dict], Counter] | BaseException] = [([], Counter()) for _ in parts]

    def run(i: int) -> None:
        try:
            results[i] = run_cases(module, name, folder / f"w{i}", parts[i], env=env, hang_s=hang_s)
        except BaseException as e:  # noqa: BLE001 - raised in the test's own thread below
            results[i] = e

    threads = []
    for i, part in enumerate(parts):
        if part:
            (folder / f"w{i}").mkdir(parents=True, exist_ok=True)
            threads.append(threading.Thread(target=run, args=(i,)))
            threads[-1].start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    failures = sorted((f for r in results for f in r[0]), key=lambda f: f["case"])
    return failures, sum((r[1] for r in results), Counter())


def selected(names: Sequence[str], cases: int) -> list[tuple[str, list[int]]]:
    """Each name with cases 0..cases-1, or what FAT_FUZZ_ONLY=name:case[,case...] asks for (to rerun failures)."""
    only = os.environ.get("FAT_FUZZ_ONLY")
    if only:
        name, _, numbers = only.partition(":")
        return [(name, [int(c) for c in numbers.split(",")] if numbers else list(range(cases)))]
    return [(n, list(range(cases))) for n in names]


def check(module: str, key: str, name: str, folder: Path, cases: list[int], *, env: Mapping[str, str],
          hang_s: float, workers: int = 2) -> Counter:
    """The fuzz test of `name`: run the cases, print a summary, append every failure to FAT_FUZZ_REPORT
    (JSON lines, `key` naming `name`), and fail with the first 40 failures and how to rerun the first.

    Returns the outcomes ("ok", "FATError <exit code>") for the caller's own checks.
    """
    t0 = time.perf_counter()
    failures, outcomes = fuzz(module, name, folder, cases, env=env, hang_s=hang_s, workers=workers)
    kinds = Counter(f["error"].split(":")[0] for f in failures)
    summary = (f"{name}: {len(cases)} cases in {time.perf_counter() - t0:.1f} s; outcomes {dict(outcomes)}; "
               f"{len(failures)} failures {dict(kinds)}")
    print(summary)
    report = os.environ.get("FAT_FUZZ_REPORT")
    if report:
        with open(report, "a") as f:
            f.writelines(json.dumps({key: name, **x}) + "\n" for x in failures)
    if failures:
        lines = [f"  case {f['case']} ({f['what']}): {f['error']} at {f.get('where', '')}" for f in failures[:40]]
        pytest.fail(summary + "\n" + "\n".join(lines) + f"\nreproduce: FAT_FUZZ_ONLY={name}:{failures[0]['case']}")
    return outcomes
