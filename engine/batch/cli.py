"""`python -m engine batch RECIPE.toml [--dry-run] [--force] [--jobs N | --scheduler ADDRESS] [--verbose]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import EXIT_CANCELLED, EXIT_SOME_FAILED, EXIT_USAGE, FATError


def parser(parser_class) -> argparse.ArgumentParser:
    p = parser_class(prog="python -m engine batch", description="Apply a recipe of edits to many photos: "
                     "resumable (finished outputs are skipped), with a report (report.jsonl, report.html).")
    p.add_argument("recipe", type=Path, help="the recipe (TOML; see README.md 'Batch recipes')")
    p.add_argument("--dry-run", action="store_true", help="list what would be done, do nothing")
    p.add_argument("--force", action="store_true", help="redo outputs that are already finished")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (a local Dask cluster "
                                                      "when above 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask cluster (tcp://host:8786); "
                                                          "outputs must be on a file system the workers share")
    p.add_argument("--verbose", action="store_true", help="per-image optimisation progress (single process); an "
                                                           "internal error of the run prints its traceback (an image's "
                                                           "own internal error is logged to the file its record names)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str], parser_class) -> int:
    args = parser(parser_class).parse_args(argv)
    if args.jobs < 1 or args.jobs > 256:
        raise FATError(f"--jobs {args.jobs}: must be between 1 and 256.", EXIT_USAGE)
    if args.scheduler and args.jobs != 1:
        raise FATError("--jobs and --scheduler: give one (the cluster at --scheduler has its own workers).",
                       EXIT_USAGE)
    from engine.batch.api import run_batch

    result = run_batch(args.recipe, dry_run=args.dry_run, force=args.force, jobs=args.jobs,
                       scheduler=args.scheduler, verbose=args.verbose, quiet=args.quiet)
    if result.stopped:
        return EXIT_CANCELLED
    return EXIT_SOME_FAILED if result.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], argparse.ArgumentParser))
