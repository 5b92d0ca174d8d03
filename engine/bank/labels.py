"""Label files: a CSV with a `file` column and one 0/1 column per attribute (../shared/faces/faces.csv is
one; a `person` or `identity_group` column, if present, says who is who), or CelebA's list_attr_celeba.txt
(a count line, a header of 40 attribute names, then `FILE v1 ... v40` with 1 / -1).

Returns {file name: {attribute: 0/1, "person": str}}; files are matched by name (not path).
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine.bank.attributes import ATTRIBUTES, CELEBA_COLUMNS
from engine.errors import EXIT_INPUT, FATError

PERSON_COLUMNS = ("identity_group", "person")


def read_labels(path: Path) -> dict[str, dict]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FATError(f"--labels {path}: cannot read it ({e}).", EXIT_INPUT) from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 2 and lines[0].strip().isdigit():
        return _celeba(lines, path)
    return _csv(text, path)


def _csv(text: str, path: Path) -> dict[str, dict]:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "file" not in rows[0]:
        raise FATError(f"--labels {path}: expected a CSV with a 'file' column and 0/1 attribute columns "
                       f"({', '.join(ATTRIBUTES)}), or CelebA's list_attr_celeba.txt.", EXIT_INPUT)
    columns = [c for c in ATTRIBUTES if c in rows[0]]
    if not columns:
        raise FATError(f"--labels {path}: no attribute column; known: {', '.join(ATTRIBUTES)}.", EXIT_INPUT)
    out = {}
    for n, row in enumerate(rows, start=2):
        entry: dict = {}
        for c in columns:
            value = (row.get(c) or "").strip()
            if value == "":
                continue
            if value not in ("0", "1"):
                raise FATError(f"--labels {path} line {n}: {c}={value!r}; expected 0 or 1.", EXIT_INPUT)
            entry[c] = int(value)
        person = next((row[c].strip() for c in PERSON_COLUMNS if (row.get(c) or "").strip()), None)
        if person:
            entry["person"] = person
        out[Path(row["file"].strip()).name] = entry
    return out


def _celeba(lines: list[str], path: Path) -> dict[str, dict]:
    header = lines[1].split()
    wanted = {i: CELEBA_COLUMNS[h] for i, h in enumerate(header) if h in CELEBA_COLUMNS}
    if not wanted:
        raise FATError(f"--labels {path}: a CelebA attribute file without {', '.join(CELEBA_COLUMNS)}.",
                       EXIT_INPUT)
    out = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != len(header) + 1:
            raise FATError(f"--labels {path} line {n}: {len(parts) - 1} values for {len(header)} attributes.",
                           EXIT_INPUT)
        try:
            out[Path(parts[0]).name] = {a: int(int(parts[i + 1]) > 0) for i, a in wanted.items()}
        except ValueError:
            raise FATError(f"--labels {path} line {n}: values must be 1 or -1.", EXIT_INPUT) from None
    return out
