"""A recipe -> one task per (edit, input photo, strength), each with the key that makes a run resumable.

A task's key is a hash of everything that decides its output: the edit options, the strength,
the faces choice and the sha256 of the input, the guide and the bank. The key is stored in the
output's sidecar (OUT.json, "batch" entry); a later run skips a task whose output exists with the
same key, so changing one strength re-runs only the outputs of that strength.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.batch.recipe import Edit, Recipe
from engine.errors import EXIT_USAGE, FATError
from engine.io.files import sha256_file
from engine.io.paths import OUTPUT_TYPES
from engine.options import resolved_region

KEY_VERSION = 5  # bump when the meaning of a key changes (2: the smile reshapes the face; 3: the mouth too;
# 4: the mouth's opening scales half-way with the face; 5: folds as brightness, colour statistics without the opening)


@dataclass(frozen=True)
class Task:
    edit: str
    input: str
    output: str
    guide: str | None
    strength: float
    faces: str | int
    options: dict  # edit options without strength
    key: str

    def to_dict(self) -> dict:
        return asdict(self)


def strength_text(s: float) -> str:
    """1.0 -> '1', 0.5 -> '0.5', -1 -> 'm1' (file names without a leading minus)."""
    text = f"{s:g}"
    return "m" + text[1:] if text.startswith("-") else text


def output_path(edit: Edit, source: Path, strength: float) -> Path:
    ext = source.suffix.lstrip(".").lower() or "png"
    return Path(edit.output.format(stem=source.stem, name=source.name, ext=ext, strength=strength_text(strength),
                                   edit=edit.name, region=resolved_region(edit.options.get("region", "auto"),
                                                                          edit.options.get("attribute")),
                                   attribute=edit.options.get("attribute") or "guide"))


def guide_path(edit: Edit, source: Path) -> str | None:
    if edit.guide is None:
        return None
    ext = source.suffix.lstrip(".").lower()
    return edit.guide.format(stem=source.stem, name=source.name, ext=ext)


class Hashes:
    """sha256 of each file, computed once per run (an input shared by several edits is read once)."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}

    def __call__(self, path: str | None) -> str | None:
        if path is None:
            return None
        if path not in self.known:
            try:
                self.known[path] = sha256_file(Path(path))
            except OSError:
                self.known[path] = "unreadable"  # the task fails later with the reader's own message
        return self.known[path]


def task_key(options: dict, strength: float, faces: str | int, hashes: dict) -> str:
    """What decides a task's output, hashed: the region as the edit resolves it (a recipe that names none, 'auto' or
    the region auto stands for makes the same edit, so the same key)."""
    region = resolved_region(options.get("region", "auto"), options.get("attribute"))
    data = {"version": KEY_VERSION, "options": {**options, "region": region}, "strength": strength, "faces": faces,
            "files": hashes}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def plan(recipe: Recipe) -> list[Task]:
    """Every task of the recipe, checked: no two tasks write one file and no output replaces an input."""
    hashes = Hashes()
    tasks: list[Task] = []
    for edit in recipe.edits:
        bank = edit.options.get("bank")
        for source in edit.inputs:
            guide = guide_path(edit, source)
            files = {"input": hashes(str(source)), "guide": hashes(guide), "bank": hashes(bank)}
            for strength in edit.strengths:
                out = output_path(edit, source, strength)
                tasks.append(Task(edit.name, str(source), str(out), guide, strength, edit.faces, edit.options,
                                  task_key(edit.options, strength, edit.faces, files)))
    _check_outputs(tasks, recipe)
    return tasks


def _check_outputs(tasks: list[Task], recipe: Recipe) -> None:
    """No two tasks write one file (as the file system sees it: a folder reached through a link is the same
    folder), none replaces an input or guide, and each output is a type the engine writes ({ext} is the input's)."""
    by_output: dict[str, Task] = {}
    reads = {os.path.realpath(p) for t in tasks for p in (t.input, t.guide) if p}
    lines = {e.name: e.lines.get("output") for e in recipe.edits}

    def fail(t: Task, message: str) -> FATError:
        line = lines.get(t.edit)
        return FATError(f"{recipe.path}{f':{line}' if line else ''}: {message}", EXIT_USAGE)

    for t in tasks:
        if Path(t.output).suffix.lower() not in OUTPUT_TYPES:
            raise fail(t, f"output {t.output}: unsupported type {Path(t.output).suffix or '(none)'!r}; use .png, "
                          ".jpg, .tif or .webp ({ext} is the input's own, without its dot: {stem}.{ext}).")
        real = os.path.realpath(t.output)
        if real in by_output:
            other = by_output[real]
            raise fail(t, f"two tasks would write {t.output} ({other.edit} of {other.input} and {t.edit} of "
                          f"{t.input}); put {{stem}}, {{edit}} or {{strength}} in the output pattern.")
        by_output[real] = t
        if real in reads or os.path.realpath(Path(t.output).with_suffix(".json")) in reads:
            raise fail(t, f"output {t.output} would replace an input photo; choose another output folder.")


def sidecar_of(task: Task) -> Path:
    return Path(task.output).with_suffix(".json")


def finished_record(task: Task) -> dict | None:
    """The stored report record when the task's output exists with the same key, else None."""
    out, sidecar = Path(task.output), sidecar_of(task)
    if not out.is_file() or not sidecar.is_file():
        return None
    try:
        batch = json.loads(sidecar.read_text()).get("batch", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(batch, dict) or batch.get("key") != task.key or not isinstance(batch.get("record"), dict):
        return None
    return batch["record"]
