"""A batch's report: report.jsonl (one record per image), a summary table, report.html with thumbnails.

The HTML page is static (no script): failures first, then one row per output with before/after
thumbnails (each a link to the full-size file), the settings that differ between edits, the
identity distance (dlib descriptor, reference -> result; same person below ~0.6), the first edited
face before | after (a close-up: a group photo's thumbnail shrinks the change away) and the
attribute's landmark score before -> after (engine/bank/measure.py).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageOps

from engine.io.files import atomic_write

THUMB = 200  # px, the longer side


def write_jsonl(records: list[dict], path: Path) -> None:
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def summary_rows(records: list[dict]) -> list[list[str]]:
    """Per edit: images, done, skipped, failed, not run, worst identity distance, score before -> after, s/image."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["edit"]].append(r)
    rows = [["edit", "outputs", "done", "skipped", "failed", "not run", "identity max", "measure before->after",
             "s/image"]]
    for name, rs in groups.items():
        count = {s: sum(r["status"] == s for r in rs) for s in ("done", "skipped", "failed", "not run")}
        edited = [r for r in rs if r["status"] in ("done", "skipped") and "identity_distance" in r]
        ran = [r["seconds"] for r in rs if r["status"] == "done" and "seconds" in r]
        ident = f"{max(r['identity_distance'] for r in edited):.3f}" if edited else "-"
        before = [r["before"] for r in edited if r.get("before") is not None]
        after = [r["after"] for r in edited if r.get("after") is not None]
        measure = (f"{edited[0]['measure']} {sum(before) / len(before):.3f}->{sum(after) / len(after):.3f}"
                   if before and after else "-")
        rows.append([name, str(len(rs)), *(str(count[s]) for s in ("done", "skipped", "failed", "not run")), ident,
                     measure, f"{sum(ran) / len(ran):.1f}" if ran else "-"])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def failures(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "failed"]


def thumbnail(source: str, folder: Path) -> str | None:
    """A small JPEG of `source` in folder/thumbs (named by the file's path and mtime), relative to `folder`."""
    try:
        st = os.stat(source)
        name = hashlib.sha256(f"{source}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:20] + ".jpg"
        target = folder / "thumbs" / name
        if not target.exists():
            with Image.open(source) as im:
                im.draft("RGB", (THUMB * 2, THUMB * 2))
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((THUMB, THUMB))
                atomic_write(target, lambda tmp: im.save(tmp, "JPEG", quality=85))
        return f"thumbs/{name}"
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None  # an unreadable input: its row says why it failed


def face_pair(r: dict, folder: Path) -> str | None:
    """The first edited face, before | after, side by side at THUMB px high: the change itself, which a
    whole-photo thumbnail of a group photo shrinks away."""
    faces = r.get("face_details") or []
    if r["status"] not in ("done", "skipped") or not faces:
        return None
    left, top, right, bottom = faces[0]["box"]
    pad = 0.35 * max(right - left, bottom - top)
    try:
        stamp = "|".join(f"{p}:{os.stat(p).st_mtime_ns}" for p in (r["input"], r["output"]))
        name = "face-" + hashlib.sha256(f"{stamp}|{faces[0]['box']}".encode()).hexdigest()[:20] + ".jpg"
        target = folder / "thumbs" / name
        if not target.exists():
            crops = []
            for p in (r["input"], r["output"]):
                with Image.open(p) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    box = (max(0, int(left - pad)), max(0, int(top - pad)), min(im.width, int(right + pad)),
                           min(im.height, int(bottom + pad)))
                    im = im.crop(box)
                    im.thumbnail((THUMB, THUMB))
                    crops.append(im)
            pair = Image.new("RGB", (crops[0].width + crops[1].width + 4, max(c.height for c in crops)), "white")
            pair.paste(crops[0], (0, 0))
            pair.paste(crops[1], (crops[0].width + 4, 0))
            atomic_write(target, lambda tmp: pair.save(tmp, "JPEG", quality=90))
        return f"thumbs/{name}"
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


def _link(path: str, folder: Path) -> str:
    return html.escape(Path(os.path.relpath(path, folder)).as_posix(), quote=True)


def _image_cell(path: str | None, folder: Path) -> str:
    thumb = thumbnail(path, folder) if path and Path(path).is_file() else None
    if thumb is None:
        return "<td class=img><small>no preview</small></td>"
    return (f'<td class=img><a href="{_link(path, folder)}"><img src="{html.escape(thumb, quote=True)}" '
            f'alt="{html.escape(Path(path).name, quote=True)}"></a></td>')


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _details(r: dict) -> str:
    """The photo's name and numbers, one short line each (a narrow column beside the pictures)."""
    lines = [f"<b>{html.escape(Path(r['input']).name)}</b>", f"{html.escape(r['edit'])}, strength {r['strength']:g}",
             f"<span class=status>{html.escape(r['status'])}</span>"]
    if r["status"] == "failed":
        lines.append(f"<small>{html.escape(r.get('error', ''))}</small>")
    if r.get("faces_edited") is not None:
        lines.append(f"faces edited: {r['faces_edited']}")
    if r.get("identity_distance") is not None:
        lines.append(f"identity: {_number(r['identity_distance'])}")
    if r.get("measure") and r.get("before") is not None:
        lines.append(f"{html.escape(r['measure'])}: {_number(r['before'])} &rarr; {_number(r.get('after'))}")
    if r.get("seconds") is not None:
        lines.append(f"{_number(r['seconds'], 1)} s")
    return "<td class=details>" + "<br>".join(lines) + "</td>"


def _row(r: dict, folder: Path) -> str:
    before, after = _image_cell(r["input"], folder), _image_cell(r["output"] if r["status"] in ("done", "skipped")
                                                                 else None, folder)
    pair = face_pair(r, folder)
    face = (f'<td class=img><img src="{html.escape(pair, quote=True)}" alt="face before and after"></td>' if pair
            else "<td class=img>-</td>")
    return f"<tr class={html.escape(r['status'].replace(' ', '-'))}>{before}{after}{face}{_details(r)}</tr>"


STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:middle;text-align:left}
td.img{min-width:204px;height:204px;text-align:center}
td.img img{max-width:404px;max-height:200px;display:block;margin:auto}
td.details{min-width:14em;max-width:22em;font-size:90%}
.status{font-weight:bold}
tr.failed{background:#fde8e8}
tr.skipped{background:#f4f4f4}
.fail li{margin:.3em 0}
small{color:#555}
"""


def write_html(records: list[dict], folder: Path, title: str) -> Path:
    rows = summary_rows(records)
    summary = "".join("<tr>" + "".join(f"<t{'h' if i == 0 else 'd'}>{html.escape(c)}</t{'h' if i == 0 else 'd'}>"
                                       for c in row) + "</tr>" for i, row in enumerate(rows))
    fails = failures(records)
    fail_list = ("<h2>Failures</h2><ul class=fail>" + "".join(
        f"<li><b>{html.escape(r['input'])}</b> ({html.escape(r['edit'])}, strength {r['strength']:g}): "
        f"{html.escape(r.get('error', ''))}</li>" for r in fails) + "</ul>") if fails else ""
    body = "".join(_row(r, folder) for r in records)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><table>{summary}</table>{fail_list}"
            "<h2>Images</h2><p>Click a picture for the full-size file; 'face' shows the (first) edited face "
            "before | after. Identity: dlib descriptor distance, reference to result (the same person below about "
            "0.6).</p><table><tr><th>before</th><th>after</th><th>face</th><th>photo</th></tr>"
            f"{body}</table></body></html>")
    path = folder / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def write_report(records: list[dict], folder: Path, title: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "report.jsonl"
    write_jsonl(records, jsonl)
    return jsonl, write_html(records, folder, title)
