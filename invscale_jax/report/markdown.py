"""`summary.md`: the report's sections as Markdown. Titles, table cells and list items
hold names from user files and are escaped (`checks.markdown_text`: Markdown viewers render
raw HTML, links and images)."""

from __future__ import annotations

from typing import Sequence

from invscale_jax import checks
from invscale_jax.report import tables

_text = checks.markdown_text


def table(t: tables.Table) -> str:
  lines = ["| " + " | ".join(map(_text, t.headers)) + " |",
           "|" + "---|" * len(t.headers)]
  lines += ["| " + " | ".join(map(_text, row)) + " |" for row in t.rows]
  return "\n".join(lines)


def render(title: str, header: Sequence[str], sections: Sequence[tables.Section],
           figure: str | None = None) -> str:
  """The whole summary; `figure` is the relative path of the plot to show, if any."""
  parts = [f"# {_text(title)}", "\n".join(f"- {_text(line)}" for line in header)]
  if figure:
    parts.append(f"![scaling curves]({figure})")
  for s in sections:
    parts.append(f"## {_text(s.title)}")
    if s.text:
      parts.append(s.text.strip())  # the report's own Markdown
    if s.table is not None:
      parts.append(table(s.table) if s.table.rows else "_(none)_")
    if s.items:
      parts.append("\n".join(f"- {_text(item)}" for item in s.items))
  return "\n\n".join(parts) + "\n"
