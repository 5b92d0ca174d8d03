"""`run_batch(recipe)`: the batch front door shared by the CLI and scripts.

recipe -> tasks (engine/batch/tasks.py) -> skip the finished ones -> run the rest here or on a Dask
cluster (engine/batch/run.py) -> report (engine/batch/report.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.batch.recipe import load_recipe
from engine.batch.report import failures, format_table, summary_rows, write_report
from engine.batch.run import not_run, resume_hint, run_dask, run_local, say_to_stderr, split_finished
from engine.batch.tasks import Task, plan


@dataclass
class BatchResult:
    records: list[dict]
    stopped: bool
    report_jsonl: Path | None
    report_html: Path | None

    @property
    def failed(self) -> list[dict]:
        return failures(self.records)


def describe(tasks: list[Task], done: dict[int, dict]) -> str:
    lines = []
    for i, t in enumerate(tasks):
        what = f"guide {t.guide}" if t.guide else f"attribute {t.options.get('attribute')}"
        state = "skip (finished)" if i in done else "edit"
        lines.append(f"{state:16} {t.edit}: {t.input} -> {t.output} (strength {t.strength:g}, faces {t.faces}, "
                     f"{what})")
    return "\n".join(lines)


def _progress_for(verbose: bool) -> Callable[[Task], Callable | None]:
    def make(task: Task):
        if not verbose:
            return None
        from engine.frontends.cli import ProgressBar

        return ProgressBar(int(task.options.get("iterations", 40)))
    return make


def run_batch(recipe_path: Path | str, *, dry_run: bool = False, force: bool = False, jobs: int = 1,
              scheduler: str | None = None, client=None, verbose: bool = False, quiet: bool = False,
              on_record: Callable[[dict], None] | None = None, say: Callable[[str], None] = say_to_stderr
              ) -> BatchResult:
    """Run a recipe; `on_record(record)` is called as each image finishes (a script's progress callback).
    `client`: an existing dask.distributed.Client to run on."""
    recipe = load_recipe(Path(recipe_path))
    tasks = plan(recipe)
    done, todo = split_finished(tasks, force)
    if dry_run:
        say(describe(tasks, done))
        say(f"{len(todo)} to edit, {len(done)} finished; nothing was done (--dry-run).")
        return BatchResult([dict(not_run(t), status="skipped" if i in done else "to do") for i, t in
                            enumerate(tasks)], False, None, None)
    records: dict[int, dict] = dict(done)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=len(done), desc="images", unit="image", file=sys.stderr)

    def record(i: int, r: dict) -> None:
        records[i] = r
        if r["status"] == "failed":
            say(f"failed: {r['input']} ({r['edit']}, strength {r['strength']:g}): {r.get('error')}")
        if bar is not None:
            bar.update(1)
        if on_record is not None:
            on_record(r)

    say(f"{len(tasks)} outputs: {len(done)} finished already, {len(todo)} to edit.")
    stopped = False
    try:
        if jobs > 1 or scheduler or client is not None:
            stopped = run_dask(tasks, todo, record, say, jobs=jobs, scheduler=scheduler, client=client)
        else:
            stopped = run_local(tasks, todo, record, _progress_for(verbose and not quiet), say)
    except KeyboardInterrupt:
        stopped = True
    finally:
        if bar is not None:
            bar.close()
        ordered = [records.get(i) or not_run(t) for i, t in enumerate(tasks)]
        jsonl, page = write_report(ordered, recipe.report, f"Batch report: {recipe.path.name}")
        say(format_table(summary_rows(ordered)))
        for r in failures(ordered):
            say(f"  failed: {r['input']} ({r['edit']}, strength {r['strength']:g}): {r.get('error')}")
        say(f"report: {page} and {jsonl}")
        if stopped:
            say(resume_hint(str(recipe.path)))
    return BatchResult(ordered, stopped, jsonl, page)
