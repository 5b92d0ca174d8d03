"""Run a recipe's tasks: in this process, or on a Dask cluster (a local one for --jobs N, or --scheduler).

Both paths call the same engine/batch/work.py run_task and hand back the same records, so outputs,
sidecars and reports do not depend on where a task ran. Dask (not a home-made scheduler) re-runs a
task whose worker died on another worker; resuming covers anything a stopped run left undone.

Why Dask rather than Ray: it is pure Python (two wheels, ~2 MB, against Ray's ~60 MB native wheel and its
own object store and dashboard), `LocalCluster` and a real cluster are the same `Client`, a worker is
any process that can import `engine` (`dask worker ADDRESS` from the project's venv), and each task here
is one coarse function call whose result is a small dict: nothing needs Ray's actors or shared memory.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.batch.tasks import Task, finished_record
from engine.batch.work import run_task
from engine.errors import EXIT_CANCELLED, describe_failure


@dataclass
class Outcome:
    records: list[dict]  # one per task, in recipe order
    stopped: bool = False  # Ctrl-C: the run ended early
    notes: list[str] = field(default_factory=list)


def split_finished(tasks: list[Task], force: bool) -> tuple[dict[int, dict], list[int]]:
    """(index -> stored record of a finished task, indices still to do)."""
    done: dict[int, dict] = {}
    for i, t in enumerate(tasks):
        stored = None if force else finished_record(t)
        if stored is not None:
            done[i] = {**stored, "status": "skipped", "previous_status": stored.get("status")}
    return done, [i for i in range(len(tasks)) if i not in done]


def not_run(task: Task) -> dict:
    return {"edit": task.edit, "input": task.input, "output": task.output, "strength": task.strength,
            "status": "not run"}


@contextmanager
def stop_after_current(say: Callable[[str], None]) -> Iterator[list]:
    """First Ctrl-C: finish the current image, then stop; the second stops at once."""
    flag: list = []

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(True)
        say("stopping after the current image (Ctrl-C again to stop now)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C is the caller's business
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_local(tasks: list[Task], todo: list[int], on_record: Callable[[int, dict], None],
              progress_for: Callable[[Task], Callable | None], say: Callable[[str], None]) -> bool:
    """In this process, one task after another; True when stopped early."""
    with stop_after_current(say) as stop:
        for i in todo:
            if stop:
                return True
            on_record(i, run_task(tasks[i], progress_for(tasks[i])))
    return bool(stop)


def local_cluster(jobs: int):
    """A Dask LocalCluster of `jobs` single-threaded worker processes (each task sets its torch threads)."""
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=40)


def run_dask(tasks: list[Task], todo: list[int], on_record: Callable[[int, dict], None], say: Callable[[str], None],
             jobs: int = 2, scheduler: str | None = None, client=None) -> bool:
    """On a Dask cluster: `client` (a dask.distributed.Client) if given, else `scheduler`'s address, else a
    LocalCluster of `jobs` workers. True when stopped early."""
    from dask.distributed import Client, as_completed

    own_cluster = local_cluster(jobs) if client is None and scheduler is None else None
    if client is None:
        client = Client(scheduler if scheduler else own_cluster, timeout="60s")
        own_client = True
    else:
        own_client = False
    threads = max(1, (os.cpu_count() or 1) // jobs) if own_cluster is not None else None
    try:
        futures = {client.submit(run_task, tasks[i], None, threads, pure=False, key=f"fat-{i}-{tasks[i].key[:12]}"): i
                   for i in todo}
        with stop_after_current(say) as stop:
            for future in as_completed(futures):
                i = futures[future]
                on_record(i, _result(future, tasks[i]))
                if stop:
                    client.cancel([f for f in futures if not f.done()])
                    return True
        return False
    finally:
        if own_client:
            client.close()
        if own_cluster is not None:
            own_cluster.close()


def _result(future, task: Task) -> dict:
    """The task's record, or a failure record when the cluster could not run it (e.g. its worker kept dying)."""
    try:
        return future.result()
    except Exception as e:  # KilledWorker, a lost scheduler: this image failed, the run goes on
        code, message = describe_failure(e)
        return {**not_run(task), "status": "failed", "exit_code": code, "error": f"the cluster could not run it: "
                                                                               f"{message}"}


def resume_hint(recipe_path: str) -> str:
    return (f"stopped; finished images are kept. Run `python -m engine batch {recipe_path}` again to resume "
            f"(exit {EXIT_CANCELLED}).")


def say_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
