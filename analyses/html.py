"""Self-contained HTML pages with circuitsvis panels that share one copy of its bundle.

circuitsvis renders offline only through ``RenderedHTML.local_src``, and every ``local_src``
inlines the whole 1.3 MB bundle. ``circuitsvis_html`` calls the public circuitsvis function,
takes its ``local_src`` and cuts the bundle out of it, keeping the ``CircuitsVis.render`` call
(an analysis does this and keeps the result in its page data); ``Page.panel`` shows it, and the
page inlines the bundle once, in ``<head>``. No page loads anything over the network.
"""

import html
import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sparse_lens.circuits.graph_view.sections import GRAPH_CSS

STYLE = (
    """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222;
       padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.note { color: #666; font-size: 0.9em; } .bad { color: #b00; } .good { color: #070; }
.warn { background: #fde8e8; border: 1px solid #b00; padding: 0.5em; }
.verdicts td:nth-child(2), .verdicts td:last-child { text-align: left; }
.node-panel { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; margin: 8px 0; }
.cv-panel { min-height: 20px; }
code { background: #f4f4f4; padding: 0 3px; }
nav a { margin-right: 12px; }
"""
    + GRAPH_CSS
)


@cache
def circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle exactly as ``render_local`` inlines it."""
    path = importlib.resources.files("circuitsvis") / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "")


def _page_bundle() -> str:
    # the source-map comment would make a browser with dev tools fetch iife.js.map from disk
    return re.sub(r"//# sourceMappingURL=\S+\s*$", "", circuitsvis_bundle())


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, RawHTML):
        return value.html
    return esc(value)


@dataclass(frozen=True)
class RawHTML:
    """Markup to insert unescaped (built by this package, never from user text)."""

    html: str


@dataclass(frozen=True)
class CircuitsvisHTML:
    """A circuitsvis view without its bundle copy (``circuitsvis_html``); a ``Page`` that shows
    it (``Page.panel``) inlines the bundle once."""

    html: str


def circuitsvis_html(fn: Callable[..., Any], **kwargs: Any) -> CircuitsvisHTML:
    """The circuitsvis function ``fn(**kwargs)`` rendered offline, less its bundle copy.

    Raises:
        RuntimeError: circuitsvis's ``local_src`` does not inline the bundle (so it cannot be
            taken out).
    """
    src = fn(**kwargs).local_src
    bundle = circuitsvis_bundle()
    if bundle not in src:
        raise RuntimeError(f"circuitsvis {fn.__name__}: local_src does not inline the bundle")
    body = src.replace(bundle, "")
    # circuitsvis writes a self-closing <div/>, which HTML parses as an open tag
    body = re.sub(
        r'<div id="(circuits-vis-[^"]+)" style="([^"]*)"/>',
        r'<div id="\1" class="cv-panel" style="\2"></div>',
        body,
    )
    return CircuitsvisHTML(body)


@dataclass
class Page:
    """An HTML page assembled from sections; ``render()`` returns the whole document."""

    title: str
    parts: list[str] = field(default_factory=list)
    n_panels: int = 0

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def h2(self, text: str, anchor: str | None = None) -> None:
        self.add(f'<h2 id="{esc(anchor)}">{esc(text)}</h2>' if anchor else f"<h2>{esc(text)}</h2>")

    def p(self, text: str, cls: str = "") -> None:
        self.add(f'<p class="{cls}">{esc(text)}</p>')

    def panel(self, view: CircuitsvisHTML) -> str:
        """The markup of a circuitsvis ``view``, counted so ``render`` inlines the bundle."""
        self.n_panels += 1
        return view.html

    def render(self) -> str:
        needs_bundle = self.n_panels > 0
        bundle = f"<script>{_page_bundle()}</script>" if needs_bundle else ""
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(self.title)}</title><style>{STYLE}</style>{bundle}</head>"
            f"<body><h1>{esc(self.title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )
