"""A self-contained HTML page: sections of text, tables and base64-embedded PNG figures."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Section", "figure_html", "table_html", "note_html", "render_page"]

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
.na { color: #a33; font-style: italic; } .note { color: #555; }
img { max-width: 100%; margin: 0.5em 0; }
"""


@dataclass
class Section:
    """One section of the report.

    Attributes
    ----------
    id : str
        HTML anchor (``<section id=...>``), stable for tests and links.
    title : str
    parts : list of str
        HTML fragments (figures, tables, notes), in order.
    """

    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        """Append an HTML fragment."""
        self.parts.append(fragment)

    def not_available(self, what: str, reason: str) -> None:
        """Append a "not available" note."""
        self.parts.append(f'<p class="na">{html.escape(what)}: not available '
                          f'({html.escape(reason)}).</p>')


def figure_html(fig: Any, alt: str, dpi: int = 80) -> str:
    """A matplotlib figure as an ``<img>`` with a base64 PNG (figure closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_cell(v)}</td>'
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def note_html(text: str) -> str:
    """A paragraph of explanatory text (escaped)."""
    return f'<p class="note">{html.escape(text)}</p>'


def render_page(title: str, intro: str, sections: Sequence[Section]) -> str:
    """The whole page (UTF-8 text, no external resources, no timestamps)."""
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}'
                   f"</section>" for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><ul>{toc}</ul>"
            f"{body}</body></html>\n")
