"""A batch recipe (TOML) -> validated edits, with the line at fault in every error.

A recipe's keys are the edit options of engine/options.py (region, iterations, backbone,
attribute, bank, ...) plus the batch keys below. Top-level keys apply to every `[[edit]]`
table; a recipe without `[[edit]]` tables is one edit. Relative paths are relative to the
recipe file's folder. See README.md "Batch recipes" for an example.
"""

from __future__ import annotations

import glob
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EXIT_USAGE, FATError
from engine.io.paths import OUTPUT_TYPES
from engine.options import EditOptions

PLACEHOLDERS = ("stem", "name", "ext", "strength", "edit", "region", "attribute")
BATCH_KEYS = {
    "inputs": "input photos: a list of paths or globs (** for subfolders)",
    "output": "output path pattern: {stem} {name} {ext} {strength} {edit} {region} {attribute}",
    "strengths": "a list of strengths: one output each (the pattern must then hold {strength})",
    "faces": '"largest" (default), "all" (every face, one after the other) or a face index (0 = largest)',
    "guide": "the guide photo: one shared file, or a pattern with {stem}/{name} for one guide per input",
    "name": "the edit's name in reports and in {edit}",
    "report": "folder for report.jsonl and report.html (top level only; default: the first edit's output folder)",
}
TOP_ONLY = ("report",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


@dataclass
class Edit:
    """One `[[edit]]` table with the top level's keys filled in, checked."""

    name: str
    inputs: list[Path]
    output: str  # pattern, absolute
    strengths: list[float]
    faces: str | int  # "largest", "all" or an index
    guide: str | None  # path or pattern, absolute
    options: dict  # edit options (engine/options.py names) without strength
    lines: dict[str, int] = field(default_factory=dict)  # key -> line in the recipe, for later errors


@dataclass
class Recipe:
    path: Path
    edits: list[Edit]
    report: Path
    text: str


def key_lines(text: str) -> dict[tuple[int | None, str], int]:
    """(edit index or None for the top level, key) -> 1-based line: tomllib gives values, not positions."""
    lines: dict[tuple[int | None, str], int] = {}
    section: int | None = None
    edit_count = -1
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[[") and stripped[2:].split("]]")[0].strip() == "edit":
            edit_count += 1
            section = edit_count
            lines.setdefault((section, "[[edit]]"), number)
            continue
        if stripped.startswith("["):
            section = -1  # some other table: its keys are reported by the table check
            lines.setdefault((None, stripped.strip("[] ")), number)
            continue
        m = re.match(r'\s*("?)([A-Za-z0-9_-]+)\1\s*=', line)
        if m:
            lines.setdefault((section, m.group(2)), number)
    return lines


class Locator:
    """Turns (edit index, key) into 'recipe.toml:LINE' for messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, key_lines(text)

    def where(self, index: int | None, key: str | None = None) -> str:
        for k in ((index, key), (None, key), (index, "[[edit]]")):
            if k in self.lines:
                return f"{self.path}:{self.lines[k]}"
        return str(self.path)

    def fail(self, index: int | None, key: str | None, message: str) -> FATError:
        return FATError(f"{self.where(index, key)}: {message}", EXIT_USAGE)


def load_recipe(path: Path) -> Recipe:
    """Read and check the whole recipe before anything runs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FATError(f"{path}: no such recipe file.", EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError) as e:
        raise FATError(f"{path}: cannot read the recipe ({e}).", EXIT_USAGE) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FATError(f"{path}: not valid TOML: {e}.", EXIT_USAGE) from None
    loc = Locator(path, text)
    folder = path.resolve().parent
    has_tables = "edit" in data
    tables = data.pop("edit", [{}])
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise loc.fail(None, "edit", "'edit' must be [[edit]] tables (one per edit).")
    top = data
    _check_keys(top, None, loc, top_level=True)
    edits = []
    for i, table in enumerate(tables):
        _check_keys(table, i, loc, top_level=False)
        merged = {**{k: v for k, v in top.items() if k not in TOP_ONLY}, **table}
        edits.append(_edit(merged, i if has_tables else None, i, folder, loc))
    _check_names(edits, loc)
    report = Path(top["report"]) if "report" in top else Path(edits[0].output).parent
    report = report if report.is_absolute() else folder / report
    return Recipe(path, edits, report, text)


def _check_keys(table: dict, index: int | None, loc: Locator, top_level: bool) -> None:
    known = set(BATCH_KEYS) | set(EditOptions.__dataclass_fields__)
    for key, value in table.items():
        if key not in known:
            raise loc.fail(index, key, f"unknown key {key!r}; a recipe takes the edit options "
                                       f"({', '.join(sorted(EditOptions.__dataclass_fields__))}) and "
                                       f"{', '.join(BATCH_KEYS)}.")
        if key in TOP_ONLY and not top_level:
            raise loc.fail(index, key, f"{key!r} belongs at the top of the recipe, not in an [[edit]] table.")
        if isinstance(value, dict) and key != "overrides":
            raise loc.fail(index, key, f"{key!r} must be a value, not a table.")


def _text(value: object, index: int | None, key: str, loc: Locator) -> str:
    if not isinstance(value, str) or not value:
        raise loc.fail(index, key, f"{key} must be a non-empty text, not {value!r:.60}.")
    return value


def _absolute(pattern: str, folder: Path) -> str:
    p = Path(pattern).expanduser()
    return str(p if p.is_absolute() else folder / p)


def _check_pattern(pattern: str, index: int | None, key: str, loc: Locator, allowed=PLACEHOLDERS) -> None:
    try:
        names = {m.group(1) for m in re.finditer(r"{([^{}]*)}", pattern)}
        pattern.format(**{n: "x" for n in allowed})
    except (KeyError, ValueError, IndexError):
        names = {"?"}
    bad = sorted(n for n in names if n not in allowed)
    if bad:
        raise loc.fail(index, key, f"{key} {pattern!r}: unknown placeholder(s) {', '.join('{'+b+'}' for b in bad)}; "
                                   f"use {', '.join('{'+a+'}' for a in allowed)}.")


def _inputs(value: object, index: int | None, loc: Locator, folder: Path) -> list[Path]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise loc.fail(index, "inputs", "inputs must be a path/glob or a list of them, e.g. [\"photos/*.jpg\"].")
    found: dict[Path, None] = {}
    for item in items:
        pattern = _absolute(item, folder)
        if not glob.has_magic(pattern):  # a named photo: a typo is a recipe error, found before anything runs
            if not Path(pattern).is_file():
                raise loc.fail(index, "inputs", f"{item!r}: no such file ({pattern}).")
            found[Path(pattern).resolve()] = None
            continue
        files = [Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file()]
        files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise loc.fail(index, "inputs", f"{item!r} matches no image file (looked for {pattern}).")
        for f in files:
            found[f.resolve()] = None
    return list(found)


def _strengths(merged: dict, index: int | None, loc: Locator) -> list[float]:
    if "strengths" in merged and "strength" in merged:
        raise loc.fail(index, "strengths", "give strength or strengths, not both.")
    value = merged.get("strengths", [merged.get("strength", EditOptions.strength)])
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise loc.fail(index, "strengths", f"strengths must be a non-empty list of numbers, not {value!r:.60}.")
    if len(set(value)) != len(value):
        raise loc.fail(index, "strengths", f"strengths {value} lists a value twice.")
    return [float(v) for v in value]


def _faces(value: object, index: int | None, loc: Locator) -> str | int:
    if value in ("largest", "all") or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1000):
        return value
    raise loc.fail(index, "faces", f'faces must be "largest", "all" or a face index 0..1000, not {value!r:.40}.')


def _options(merged: dict, strengths: list[float], index: int | None, loc: Locator) -> dict:
    options = {k: v for k, v in merged.items() if k in EditOptions.__dataclass_fields__ and k != "strength"}
    attribute = options.get("attribute")
    # one key at a time first, so the error names its line; the attribute alone first, since the other keys are
    # checked with it (a misspelled attribute was blamed on the first key checked with it)
    for key, value in sorted(options.items(), key=lambda kv: kv[0] != "attribute"):
        try:
            EditOptions.from_mapping({key: value, **({"attribute": attribute} if key != "attribute" else {})})
        except FATError as e:
            raise loc.fail(index, key, e.for_audience("recipe")) from None
    for s in strengths:
        try:
            EditOptions.from_mapping({**options, "strength": s})
        except FATError as e:
            raise loc.fail(index, "strengths" if "strengths" in merged else "strength",
                           e.for_audience("recipe")) from None
    return options


def _edit(merged: dict, index: int | None, position: int, folder: Path, loc: Locator) -> Edit:
    for key in ("inputs", "output"):
        if key not in merged:
            raise loc.fail(index, None, f"this edit has no {key!r} ({BATCH_KEYS[key]}).")
    strengths = _strengths(merged, index, loc)
    options = _options(merged, strengths, index, loc)
    name = _text(merged.get("name", f"edit{position + 1}"), index, "name", loc)
    output = _text(merged["output"], index, "output", loc)
    _check_pattern(output, index, "output", loc)
    if len(strengths) > 1 and "{strength}" not in output:
        raise loc.fail(index, "output", f"{len(strengths)} strengths need {{strength}} in the output pattern "
                                        f"{output!r}, or each would overwrite the last.")
    suffix = Path(output.format(**{p: "x" for p in PLACEHOLDERS})).suffix.lower()
    if "{ext}" not in output and suffix not in OUTPUT_TYPES:
        raise loc.fail(index, "output", f"output {output!r}: unsupported type {suffix!r}; use .png, .jpg, .tif "
                                        "or .webp (or {ext} for the input's own type).")
    guide = merged.get("guide")
    if guide is not None:
        guide = _text(guide, index, "guide", loc)
        _check_pattern(guide, index, "guide", loc, allowed=("stem", "name", "ext"))
        guide = _absolute(guide, folder)
        if "{" not in guide and not Path(guide).is_file():
            raise loc.fail(index, "guide", f"guide {guide}: no such file.")
    if guide is None and options.get("attribute") is None:
        raise loc.fail(index, None, "this edit needs a guide photo (guide = ...) or an attribute (attribute = "
                                    "\"smiling\", with an optional bank = ...).")
    if guide is not None and options.get("attribute") is not None:
        raise loc.fail(index, "guide", "give a guide photo or an attribute, not both.")
    if options.get("bank") is not None:
        options["bank"] = _absolute(options["bank"], folder)
        if not Path(options["bank"]).is_file():
            raise loc.fail(index, "bank", f"bank {options['bank']}: no such file (python -m engine bank build "
                                          "makes one).")
    if isinstance(options.get("backbone"), str) and options["backbone"].endswith(".json"):
        options["backbone"] = _absolute(options["backbone"], folder)
    return Edit(name, _inputs(merged["inputs"], index, loc, folder), _absolute(output, folder), strengths,
                _faces(merged.get("faces", "largest"), index, loc), guide, options,
                {k: n for (i, k), n in loc.lines.items() if i in (index, None)})


def _check_names(edits: list[Edit], loc: Locator) -> None:
    seen: dict[str, int] = {}
    for i, e in enumerate(edits):
        if e.name in seen:
            raise loc.fail(i, "name", f"two edits are named {e.name!r}; names must differ.")
        seen[e.name] = i
