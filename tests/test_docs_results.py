"""The benchmarks page's tables come from the result files (docs/hooks.py), and every committed file renders.

Mutations tried: the newest record per figure replaced by the oldest -> the latest-figures test red; the
history in file order instead of newest first -> the history test red; a missing required key accepted ->
the incomplete-record test red; records in file-name order instead of by date -> the history test red; a named
claim also rendered under "unlisted" -> the unlisted test red.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_hooks():
    spec = importlib.util.spec_from_file_location("kerasce_docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def write(results: Path, claim: str, stamp: str, figures: dict, filename: str = "", **extra) -> None:
    record = {
        "name": claim,
        "command": f"python benchmarks/{claim}.py",
        "date": f"2026-01-{stamp}T00:00:00+00:00",
        "commit": f"c{stamp}",
        "machine": {"cpu": "Test CPU", "cores": 2},
        "versions": {"keras": "3.15.1"},
        "figures": figures,
        **extra,
    }
    (results / claim).mkdir(parents=True, exist_ok=True)
    (results / claim / (filename or f"202601{stamp}T000000Z.json")).write_text(json.dumps(record), encoding="utf-8")


def rows_of(markdown: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row of ``markdown`` whose first cell is ``first_cell``."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    return [row for row in rows if row[0] == first_cell]


def test_each_figure_comes_from_the_newest_run_that_measured_it(tmp_path):
    write(tmp_path, "claim", "01", {"ratio": 1.25, "other": 7})
    write(tmp_path, "claim", "02", {"ratio": 0.875, "rows": [{"case": "a", "ms": 1.5}]})
    page = hooks.render_claim("claim", tmp_path)
    assert rows_of(page, "ratio")[0] == ["ratio", "0.875", "2026-01-02", "`c02`"]
    assert rows_of(page, "other")[0] == ["other", "7", "2026-01-01", "`c01`"]
    assert "python benchmarks/claim.py" in page and "keras 3.15.1" in page and "Test CPU (2 cores)" in page
    assert rows_of(page, "a") == [["a", "1.5"]]  # the newest run's table


def test_the_history_has_one_row_per_run_newest_first(tmp_path):
    for stamp, ratio in [("03", 1.0), ("01", 3.0), ("02", 2.0)]:
        write(tmp_path, "claim", stamp, {"ratio": ratio})
    # Named so that it sorts first: the order is the records' dates, not the file names.
    write(
        tmp_path,
        "claim",
        "04",
        {"speed": 9},
        filename="0.json",
        source="transcribed from a notebook",
        note="busy machine",
    )
    history = hooks.render_history(hooks.load_records(tmp_path / "claim"))
    lines = [line for line in history.splitlines() if line.startswith("| 2026")]
    assert [line.split("|")[1].strip() for line in lines] == ["2026-01-04", "2026-01-03", "2026-01-02", "2026-01-01"]
    assert lines[0].endswith("| – | 9 | transcribed from a notebook; busy machine |"), lines[0]
    assert "| 3 | – | – |" in lines[3]


def test_nested_figures_become_headline_values_and_tables(tmp_path):
    figures = {"speed": {"ratio": 0.5, "jit": {"ratio": 0.25}}, "cases": {"a": {"ms": 1.5}, "b": {"ms": 2.5}}}
    write(tmp_path, "claim", "01", figures)
    page = hooks.render_claim("claim", tmp_path)
    assert rows_of(page, "speed / ratio")[0][1] == "0.5"
    assert rows_of(page, "speed / jit / ratio")[0][1] == "0.25"
    assert rows_of(page, "b") == [["b", "2.5"]]  # a dict of dicts: one row per key, its key first


def test_a_marker_can_pick_the_figures_the_history_tracks(tmp_path):
    write(tmp_path, "claim", "01", {"cases": {"a": {"ratio": 1.25, "ms": 3}, "b": {"ratio": 0.5}}, "n": 1})
    rows = [{"case": "a", "mode": "jit", "r": {"k/x": 0.75}}, {"case": "a", "mode": "eager", "r": {"k/x": 2.0}}]
    write(tmp_path, "claim", "02", {"cases": {"a": {"ratio": 1.5}}, "table": rows})
    page = hooks.render_results("<!-- results: claim; history: cases > * > ratio, table > * > r > k/x -->", tmp_path)
    assert rows_of(page, "a: ratio")[0] == ["a: ratio", "1.5", "2026-01-02", "`c02`"]
    assert rows_of(page, "b: ratio")[0] == ["b: ratio", "0.5", "2026-01-01", "`c01`"]
    assert rows_of(page, "a eager: k/x")[0][1] == "2" and rows_of(page, "a jit: k/x")[0][1] == "0.75"
    history = page[page.index("History") :]
    assert "| date | commit | machine | a: ratio | b: ratio | a jit: k/x | a eager: k/x | source |" in history
    assert rows_of(page, "n") == []  # an untracked headline figure is not a row
    with pytest.raises(ValueError, match="`results` options must be `history: PATH, ...`"):
        hooks.render_results("<!-- results: claim; cases > * -->", tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"command": "x", "date": "2026-01-01", "commit": "c", "machine": {}}), "Missing: \\['figures'\\]"),
    ],
)
def test_an_unreadable_or_incomplete_record_fails_the_build(tmp_path, content, message):
    (tmp_path / "claim").mkdir()
    (tmp_path / "claim" / "x.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        hooks.render_claim("claim", tmp_path)


def test_an_unknown_claim_fails_the_build(tmp_path):
    with pytest.raises(ValueError, match="`results` must name a folder.*Received: results='nope'"):
        hooks.render_results("<!-- results: nope -->\n", tmp_path)


def test_unlisted_renders_every_claim_the_page_does_not_name(tmp_path):
    for claim in ("named", "second", "third"):
        write(tmp_path, claim, "01", {"ratio": 1.0})
    page = hooks.render_results("<!-- results: named -->\n\n<!-- results: unlisted -->\n", tmp_path)
    assert re.findall(r"^### (\S+)$", page, flags=re.MULTILINE) == ["second", "third"]
    assert page.count("python benchmarks/named.py") == 1


def test_every_committed_result_file_renders_on_the_benchmarks_page():
    results = ROOT / "benchmarks" / "results"
    claims = sorted(p.name for p in results.iterdir() if p.is_dir())
    assert claims, "no result files committed"
    page = hooks.render_results((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    assert "<!-- results:" not in page
    for claim in claims:
        for record in hooks.load_records(results / claim):
            assert f"| {record['date'][:10]} | `{record['commit']}` |" in page, (claim, record["date"])
        assert hooks.load_records(results / claim)[-1]["command"] in page, claim
