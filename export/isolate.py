"""Run a third-party parser in a child process, so that a crash on a damaged file is an error.

scipy's MAT v5 reader segfaults on some damaged files (exit 139, no message). In a
child, the crash kills only the child and the user gets a FATError naming the file.
Children come from multiprocessing's fork server: a fresh interpreter (none of the
parent's torch threads), started once with the parser preloaded, that forks a child
per call, so a call costs milliseconds rather than a new interpreter's startup.
Results must be small: large arrays travel through files in a scratch folder
(formats/matconvnet.py). As with any multiprocessing use, a script that calls the
exporter must guard its top level with `if __name__ == "__main__":` (`python -m
export` and `python -c` need nothing).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path

from engine.errors import EXIT_INPUT, FATError

PRELOAD = ["export.formats.matconvnet"]


def _context() -> multiprocessing.context.BaseContext:
    if sys.platform != "win32" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _limit_memory(extra_bytes: int | None) -> None:
    """Cap the child's data size so a damaged file declaring huge arrays fails fast."""
    if extra_bytes is None:
        return
    try:
        import resource

        with open("/proc/self/status") as f:
            used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
        limit = used + extra_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ImportError, OSError, ValueError, StopIteration):
        pass  # not Linux: no cap, the parent's checks still apply


def _child(conn: Connection, fn: Callable, args: tuple, memory_bytes: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this child
    _limit_memory(memory_bytes)
    try:
        reply = ("ok", fn(*args))
    except FATError as e:
        reply = ("fat", e.message, e.exit_code)
    except MemoryError:
        reply = ("memory",)
    except BaseException as e:  # noqa: BLE001 - sent to the parent, which raises it as an internal error
        reply = ("error", f"{type(e).__name__}: {e}", traceback.format_exc())
    conn.send(reply)
    conn.close()


def _receive(conn: Connection) -> tuple | None:
    try:
        return conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        return None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"crashed ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"crashed (signal {-exitcode})"
    return f"exited with status {exitcode}"


def run_isolated(fn: Callable, args: tuple, *, path: Path, what: str, timeout_s: float,
                 memory_bytes: int | None = None) -> object:
    """fn(*args) in a child process; its crash, hang or memory exhaustion become a FATError naming `path`.

    `fn` must be importable (module level) and should raise FATError for the damage it
    recognises; any other exception comes back as a RuntimeError (a bug: exit 70).
    """
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, memory_bytes), daemon=True)
    proc.start()
    child.close()
    reply, timed_out = None, False
    try:
        ready = wait([parent, proc.sentinel], timeout_s)
        timed_out = not ready
        reply = _receive(parent) if ready else None
    finally:
        if proc.is_alive() and reply is None:
            proc.kill()
        proc.join()
        parent.close()
    if reply is None:
        if proc.exitcode == 0:
            raise RuntimeError(f"the {what} child process ended without a result")
        problem = f"took longer than {timeout_s:.0f} s" if timed_out else _death(proc.exitcode)
        raise FATError(f"{path}: the {what} {problem} on this file; it is damaged or not a valid model. "
                       "Re-download it from its publisher (see README, 'VGG-Face weights').", EXIT_INPUT)
    if reply[0] == "ok":
        return reply[1]
    if reply[0] == "fat":
        raise FATError(reply[1], reply[2])
    if reply[0] == "memory":
        cap = f" (more than {memory_bytes / 2**30:.1f} GB)" if memory_bytes else ""
        raise FATError(f"{path}: the file declares far more data than it holds{cap}; it is damaged. Re-download "
                       "it from its publisher (see README, 'VGG-Face weights').", EXIT_INPUT)
    raise RuntimeError(f"{what} failed in its child process: {reply[1]}\n{reply[2]}")

