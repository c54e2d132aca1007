"""Write a benchmark's generated markdown into a docs page, between a pair of markers (generated, never pasted)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def write_between(page: str | Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- name: generated -->`` and ``<!-- end of name -->`` in ``docs/<page>`` (a
    name), or in ``page`` itself (a path)."""
    path = page if isinstance(page, Path) else DOCS / page
    begin, end = f"<!-- {name}: generated -->", f"<!-- end of {name} -->"
    content = path.read_text()
    start, stop = content.index(begin) + len(begin), content.index(end)
    path.write_text(content[:start] + "\n\n" + text.strip() + "\n\n" + content[stop:])
    print(f"wrote the {name} into {path}")
