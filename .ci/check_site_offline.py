"""Checks that a built docs site loads nothing from the network: no web fonts, no CDN scripts or styles.

Usage: python .ci/check_site_offline.py SITE_DIR. Plain links to other sites (``<a href="https://...">``)
are fine; what a page *loads* (``<script src>``, ``<link href>``, ``<img src>``, CSS ``@import``/``url()``)
must be local, and no page or stylesheet may name a web-font service.
"""

import re
import sys
from pathlib import Path

LOADS = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=[\"']?(https?:)?//|<link\b[^>]*\bhref=[\"']?(https?:)?//", re.I
)
CSS_LOADS = re.compile(r"@import\s+(url\()?[\"']?(https?:)?//|url\([\"']?(https?:)?//", re.I)
FONT_SERVICES = re.compile(r"fonts\.googleapis\.com|fonts\.gstatic\.com|use\.typekit|fonts\.bunny\.net", re.I)


def problems(site: Path) -> list[str]:
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix not in {".html", ".css"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = LOADS if path.suffix == ".html" else CSS_LOADS
        for match in pattern.finditer(text):
            found.append(f"{path.relative_to(site)}: loads a remote resource: {match.group(0)[:120]}")
        for match in FONT_SERVICES.finditer(text):
            found.append(f"{path.relative_to(site)}: names a web-font service: {match.group(0)}")
    return found


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1], "index.html").is_file():
        sys.exit("usage: python .ci/check_site_offline.py SITE_DIR (a built mkdocs site, with index.html)")
    site = Path(sys.argv[1])
    found = problems(site)
    if found:
        sys.exit("the docs site loads from the network:\n" + "\n".join(found))
    pages = sum(1 for _ in site.rglob("*.html"))
    print(f"docs site is offline: {pages} pages, no remote fonts, scripts or styles")


if __name__ == "__main__":
    main()
