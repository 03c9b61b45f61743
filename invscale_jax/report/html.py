"""`report.html`: one self-contained page (the plot embedded as base64, no external assets)."""

from __future__ import annotations

import base64
import html
import re
from typing import Sequence

from invscale_jax.report import shapes
from invscale_jax.report import tables

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img.curves { width: 100%; height: auto; }
td.inverse, td.U-shaped { background: #fde2e1; }
td.positive { background: #e1f5e1; }
td.inverted-U { background: #fff2cc; }
td.no-signal { background: #eeeeee; color: #555; }
"""


def _inline(text: str) -> str:
  """Escapes text and renders **bold** and *italic*."""
  text = html.escape(text)
  text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
  return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


def _markdown(text: str) -> str:
  """The small Markdown subset section texts use: ### headings, paragraphs, 1. lists."""
  out = []
  for block in re.split(r"\n\s*\n", text.strip()):
    lines = block.splitlines()
    if lines[0].startswith("### "):
      out.append(f"<h3>{_inline(lines[0][4:])}</h3>")
    elif re.match(r"\d+\. ", lines[0]):
      items = [re.sub(r"^\d+\. ", "", i) for i in re.split(r"\n(?=\d+\. )", block)]
      out.append("<ol>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ol>")
    else:
      out.append(f"<p>{_inline(block)}</p>")
  return "\n".join(out)


def _table(t: tables.Table) -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
  body = "".join(
      "<tr>" + "".join(f'<td class="{c.replace(" ", "-")}">{c}</td>' if c in shapes.LABELS
                       else f"<td>{html.escape(c)}</td>" for c in row)
      + "</tr>" for row in t.rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(title: str, header: Sequence[str], sections: Sequence[tables.Section],
           png: bytes | None = None) -> str:
  parts = [f"<h1>{html.escape(title)}</h1>",
           "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in header) + "</ul>"]
  if png is not None:
    data = base64.b64encode(png).decode("ascii")
    parts.append(f'<img class="curves" alt="scaling curves" src="data:image/png;base64,{data}">')
  for s in sections:
    parts.append(f"<h2>{html.escape(s.title)}</h2>")
    if s.text:
      parts.append(_markdown(s.text))
    if s.table is not None:
      parts.append(_table(s.table) if s.table.rows else "<p><em>(none)</em></p>")
    if s.items:
      parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in s.items) + "</ul>")
  body = "\n".join(parts)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
          f"<body>\n{body}\n</body></html>\n")
