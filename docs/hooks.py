"""mkdocs hook: the benchmarks page is rendered from the result files, and the changelog page is CHANGELOG.md.

* A line ``<!-- results: NAME -->`` becomes, read from ``benchmarks/results/NAME/*.json`` (written by
  ``benchmarks/_results.py``'s ``save_result``): each figure with the newest run that measured it, that run
  (when, where, which commit and command, its tables), and a history table with one row per run, newest
  first.
* ``<!-- results: NAME; history: cases > * > ratio, ... -->`` tracks the figures at those paths (keys, ``*``
  for every key or table row) instead of the headline figures: see ``tracked``.
* A line ``<!-- results: unlisted -->`` becomes the same for every claim folder that no other marker of the
  page names, each under a heading of its name: a benchmark added later appears without a docs change.
* A line ``<!-- file: CHANGELOG.md -->`` becomes that file of the repository, whole.

How figures are shown: numbers, strings and booleans in ``figures`` are the claim's headline figures (each
shown with the newest run that measured it, and as the history's columns); a list of dicts, or a dict of
dicts, is a table of its own (newest run only); see ``split_figures``. A record may carry a ``source`` (e.g.
figures transcribed from an older document) and a ``note`` (the conditions of the run), shown with it. An
unknown claim, an unreadable or incomplete record fails the build: the page never shows a figure that is
not in the files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
UNLISTED = "unlisted"
_RESULTS_MARKER = re.compile(r"^<!-- results: (.+?) -->$", re.MULTILINE)
_FILE_MARKER = re.compile(r"^<!-- file: (.+?) -->$", re.MULTILINE)
_REQUIRED = ("command", "date", "commit", "machine", "figures")


def load_records(folder: Path) -> list[dict[str, Any]]:
    """The records of one claim's folder, oldest first (by their ``date``)."""
    if not folder.is_dir():
        raise ValueError(f"`results` must name a folder of {RESULTS}. Received: results={folder.name!r}")
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        missing = [key for key in _REQUIRED if key not in record]
        if missing:
            raise ValueError(f"{path} must hold {list(_REQUIRED)}. Missing: {missing}")
        records.append(record)
    if not records:
        raise ValueError(f"{folder} must hold at least one result file (*.json)")
    return sorted(records, key=lambda record: record["date"])


def cell(value: Any) -> str:
    """One value as a Markdown table cell."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(name) for name in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def split_figures(figures: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """``figures`` as headline values and tables. Numbers, strings, booleans, None and lists of them are
    headline values; a list of dicts is a table, and so is a dict of dicts (one row per key); another dict
    is opened, its keys prefixed with its own (``"outer / inner"``)."""
    scalars: dict[str, Any] = {}
    tables: dict[str, list[dict]] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            tables[name] = value
        elif isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
            tables[name] = [{key: row_name, **row} for row_name, row in value.items()]
        elif isinstance(value, dict):
            inner_scalars, inner_tables = split_figures(value, f"{name} / ")
            scalars |= inner_scalars
            tables |= inner_tables
        else:
            scalars[name] = value
    return scalars, tables


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a record (see ``split_figures``)."""
    return split_figures(figures)[0]


def tables_of(figures: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The tables of a record (see ``split_figures``)."""
    return split_figures(figures)[1]


def machine(record: dict[str, Any]) -> str:
    about = record["machine"]
    if isinstance(about, str):
        return about
    cores = f" ({about['cores']} cores)" if about.get("cores") else ""
    return f"{about.get('cpu', '?')}{cores}"


def provenance(record: dict[str, Any]) -> str | None:
    """Where a record's figures come from, when not from a run of the script (``source``, then ``note``)."""
    parts = [record[key] for key in ("source", "note") if record.get(key)]
    return "; ".join(parts) or None


def row_key(row: dict[str, Any]) -> str:
    """A table row's name in a path: its string values joined (e.g. case and mode), else its first value."""
    words = [value for value in row.values() if isinstance(value, str)]
    return " ".join(words) if words else str(next(iter(row.values()), ""))


def select(node: Any, path: list[str], matched: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The values at ``path`` (keys, ``*`` for every key or table row) in a record's figures, keyed by what
    each ``*`` matched."""
    if not path:
        return {matched: node}
    if isinstance(node, list) and all(isinstance(row, dict) for row in node):
        node = {row_key(row): row for row in node}
    if not isinstance(node, dict):
        return {}
    head, rest = path[0], path[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    found: dict[tuple[str, ...], Any] = {}
    for key in keys:
        found |= select(node[key], rest, (*matched, str(key)) if head == "*" else matched)
    return found


def tracked(record: dict[str, Any], paths: list[list[str]] | None) -> dict[str, Any]:
    """The figures a claim's history tracks: the headline figures, or the values at the marker's paths, named
    by what ``*`` matched and the path's last key (``cases > * > ratio`` -> ``"digits: ratio"``)."""
    if not paths:
        return headline(record["figures"])
    found: dict[str, Any] = {}
    for path in paths:
        for matched, value in select(record["figures"], path).items():
            found[f"{' '.join(matched)}: {path[-1]}" if matched else " / ".join(path)] = value
    return found


def tracked_columns(records: list[dict[str, Any]], paths: list[list[str]] | None) -> list[str]:
    """Every tracked figure of a claim's records, in the order they first appear."""
    return list(dict.fromkeys(key for record in records for key in tracked(record, paths)))


def render_latest_figures(records: list[dict[str, Any]], paths: list[list[str]] | None = None) -> str:
    """Each tracked figure from the newest run that measured it (runs may measure different subsets)."""
    rows = []
    for key in tracked_columns(records, paths):
        newest = next(r for r in reversed(records) if key in tracked(r, paths))
        rows.append([key, tracked(newest, paths)[key], newest["date"][:10], f"`{newest['commit']}`"])
    return table(["figure", "latest value", "date", "commit"], rows)


def render_run(record: dict[str, Any]) -> str:
    """One run: when, where, which command, its provenance and its tables."""
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
    lines = [
        f"The newest run: {record['date'][:10]}, commit `{record['commit']}`, {machine(record)}"
        + (f"; {versions}" if versions else "")
        + ".",
        "",
        f"```bash\n{record['command']}\n```",
    ]
    if provenance(record):
        lines += ["", f"Source: {provenance(record)}."]
    for name, rows in tables_of(record["figures"]).items():
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["", f"*{name}*", "", table(columns, [[row.get(c) for c in columns] for row in rows])]
    return "\n".join(lines)


def render_history(records: list[dict[str, Any]], paths: list[list[str]] | None = None) -> str:
    columns = tracked_columns(records, paths)
    header = ["date", "commit", "machine", *columns, "source"]
    rows = [
        [
            r["date"][:10],
            f"`{r['commit']}`",
            machine(r),
            *(tracked(r, paths).get(c) for c in columns),
            provenance(r),
        ]
        for r in reversed(records)
    ]
    return table(header, rows)


def render_claim(name: str, results: Path = RESULTS, paths: list[list[str]] | None = None) -> str:
    """A claim's latest figures, its newest run and its history; ``paths`` pick the figures to track."""
    records = load_records(results / name)
    latest, history = render_latest_figures(records, paths), render_history(records, paths)
    parts = [latest, render_run(records[-1]), f"History ({len(records)} runs, newest first):", history]
    return "\n\n".join(parts) + "\n"


def parse_marker(text: str) -> tuple[str, list[list[str]] | None]:
    """``"name; history: a > * > b, c"`` -> ``("name", [["a", "*", "b"], ["c"]])``."""
    name, _, spec = text.partition(";")
    spec = spec.strip()
    if not spec:
        return name.strip(), None
    if not spec.startswith("history:"):
        raise ValueError(f"`results` options must be `history: PATH, ...`. Received: {spec!r}")
    paths = [[key.strip() for key in path.split(">")] for path in spec[len("history:") :].split(",")]
    return name.strip(), paths


def render_results(markdown: str, results: Path = RESULTS) -> str:
    """``markdown`` with every ``<!-- results: ... -->`` marker replaced by its tables."""
    named = {parse_marker(m.group(1))[0] for m in _RESULTS_MARKER.finditer(markdown)} - {UNLISTED}

    def replace(match: re.Match[str]) -> str:
        name, paths = parse_marker(match.group(1))
        if name != UNLISTED:
            return render_claim(name, results, paths)
        folders = results.iterdir() if results.is_dir() else []
        rest = sorted(p.name for p in folders if p.is_dir() and p.name not in named)
        return "\n".join(f"### {claim}\n\n{render_claim(claim, results)}" for claim in rest) or "(none)\n"

    return _RESULTS_MARKER.sub(replace, markdown)


def _read(name: str) -> str:
    path = ROOT / name
    if not path.is_file():
        raise ValueError(f"a docs page includes {name!r}, which is not a file at the top of the repository")
    return path.read_text(encoding="utf-8")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    from mkdocs.exceptions import PluginError  # here, so that the renderers above import without mkdocs

    try:
        markdown = render_results(markdown)
        return _FILE_MARKER.sub(lambda m: _read(m.group(1).strip()), markdown)
    except ValueError as err:
        raise PluginError(str(err)) from err
