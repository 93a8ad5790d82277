"""mkdocs hook: pages include parts of README.md and CHANGELOG.md, so that text kept there is not copied.

* A line ``<!-- readme: Bad input -->`` is replaced by the body of the README section whose ``## ``
  heading starts with that title (up to the next ``## `` heading), without the heading itself.
* A line ``<!-- file: CHANGELOG.md -->`` is replaced by that file of the repository, whole.

An unknown title or file fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

_ROOT = Path(__file__).resolve().parent.parent
_README_SECTION = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
_FILE = re.compile(r"^<!-- file: (.+?) -->$", re.MULTILINE)


def readme_section(title: str, readme: str) -> str:
    """The body of the README's ``## {title}...`` section (heading excluded)."""
    sections = re.split(r"^## ", readme, flags=re.MULTILINE)
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        if heading.startswith(title):
            return body.strip() + "\n"
    raise PluginError(f"README.md has no '## {title}' section (included by a docs page)")


def _read(name: str) -> str:
    path = _ROOT / name
    if not path.is_file():
        raise PluginError(f"a docs page includes {name!r}, which is not a file at the top of the repository")
    return path.read_text(encoding="utf-8")


# README anchors whose section is a heading of another docs page: links to them from included text point there.
_ANCHOR_PAGES = {"resumed-runs-are-the-same-run": "runs.md", "troubleshooting": "runs.md"}


def on_page_markdown(markdown: str, page=None, **kwargs) -> str:
    if _README_SECTION.search(markdown):
        readme = _read("README.md")
        markdown = _README_SECTION.sub(lambda m: readme_section(m.group(1).strip(), readme), markdown)
        here = page.file.src_uri if page is not None else ""
        for anchor, target in _ANCHOR_PAGES.items():
            if here != target:
                markdown = markdown.replace(f"](#{anchor})", f"]({target}#{anchor})")
        # The README links files of docs/ (images) from the repository root; the pages live in docs/.
        markdown = markdown.replace("](docs/", "](")
    return _FILE.sub(lambda m: _read(m.group(1).strip()), markdown)
