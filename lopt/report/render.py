"""Rendering: one renderer of report blocks (Markdown and HTML) and of tables, used everywhere.

A report is a list of blocks: ``("h1"|"h2"|"p", text)``, ``("table", header, rows)``,
``("img", path, alt)``, ``("list", items)``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np


def fmt(x, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits; ``-`` for None; ``diverged`` for NaN."""
    if x is None:
        return "-"
    if isinstance(x, float) and not np.isfinite(x):
        return "diverged"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def to_markdown(blocks: Sequence[tuple]) -> str:
    """Render blocks: ("h1"|"h2"|"p", text), ("table", header, rows), ("img", path, alt), ("list", items)."""
    lines = []
    for b in blocks:
        if b[0] in ("h1", "h2"):
            lines += ["#" * int(b[0][1]) + " " + b[1], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "list":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif b[0] == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
        elif b[0] == "table":
            lines += [*_markdown_table(b[1], b[2]), ""]
    return "\n".join(lines)


def to_html(blocks: Sequence[tuple], title: str) -> str:
    """The same blocks as a standalone HTML page (figures linked by relative path)."""
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "p"):
            body.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "list":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "img":
            body.append(f'<p><img src="{e(b[1])}" alt="{e(b[2])}" style="max-width:100%"></p>')
        elif b[0] == "table":
            body.append(_html_table(b[1], b[2]))
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def _markdown_table(header: Sequence, rows: Sequence[Sequence]) -> list[str]:
    return [
        "| " + " | ".join(map(str, header)) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, r)) + " |" for r in rows),
    ]


def _html_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def table(header: Sequence, rows: Sequence[Sequence], html_: bool = False) -> str:
    """One table as Markdown lines (or an HTML fragment with ``html_=True``): the one table renderer."""
    return _html_table(header, rows) if html_ else "\n".join(_markdown_table(header, rows)) + "\n"
