"""HTML building blocks of the report: a page of sections with tables, figures and picture cards, every image
embedded as a PNG data URI and the styles inline, so the file opens anywhere without a network. The layout
is one column on a phone and a wider grid of pictures on a desktop."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;background:#f4f5f7}
main{max-width:1100px;margin:0 auto;padding:12px}
header{padding:8px 4px 4px}
h1{font-size:1.35rem;margin:.2rem 0;word-break:break-word}
h2{font-size:1.1rem;margin:0 0 .6rem}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0}
nav a{font-size:.8rem;padding:2px 8px;border-radius:10px;background:#e3e7ec;color:#1d2329;text-decoration:none}
section{background:#fff;border-radius:8px;padding:14px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.sub,.small{color:#5b6470;font-size:.85rem}
.note{color:#5b6470;font-style:italic}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:8px;margin-bottom:8px}
.tile{background:#f0f3f6;border-radius:6px;padding:8px 10px}
.tile b{display:block;font-size:1.4rem}
.tile span{color:#5b6470;font-size:.8rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.85rem;min-width:50%}
th,td{padding:4px 8px;border-bottom:1px solid #e3e7ec;text-align:left;vertical-align:top}
td{font-variant-numeric:tabular-nums}
table.kv td:last-child{overflow-wrap:anywhere}
figure{margin:0}
img{max-width:100%;height:auto;display:block}
.fig img{margin:0 auto}
figcaption{font-size:.8rem;color:#5b6470;margin-top:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,230px),1fr));gap:10px}
.cards.narrow{grid-template-columns:repeat(auto-fill,minmax(min(100%,150px),1fr))}
.card{background:#f7f8fa;border-radius:6px;padding:6px}
.pics{display:grid;grid-auto-flow:column;grid-auto-columns:1fr;gap:4px}
.pics img{width:100%;image-rendering:auto;border-radius:3px}
.card figcaption{color:#1d2329}
.file{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.75rem;color:#5b6470;word-break:break-all}
details summary{cursor:pointer;color:#34495e;margin:6px 0}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;background:#eef1f4;padding:0 3px;border-radius:3px}
"""


def fmt(v: Any, column: str = "") -> str:
    """A value as table text: lr in scientific notation, seconds to 0.1, other floats to 4 places."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if column == "lr" or (v != 0 and abs(v) < 1e-3):
            return f"{v:.2e}"
        return f"{v:.1f}" if column == "seconds" else f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)


def text_html(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def png_data_uri(image: "np.ndarray | Figure") -> tuple[str, int, int]:
    """(data URI, width, height) of a uint8 HWC array or a matplotlib Figure, as PNG."""
    buf = io.BytesIO()
    if isinstance(image, np.ndarray):
        im = Image.fromarray(image)
        im.save(buf, format="PNG", optimize=True)
        w, h = im.size
    else:
        image.savefig(buf, format="png")
        buf.seek(0)
        w, h = Image.open(buf).size
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), w, h


def img_tag(image: "np.ndarray | Figure", alt: str) -> str:
    uri, w, h = png_data_uri(image)
    return f'<img src="{uri}" width="{w}" height="{h}" alt="{html.escape(alt)}">'


class Section:
    """One <section id=...> of the page; methods append content."""

    def __init__(self, sid: str, heading: str):
        self.id, self.heading, self.parts = sid, heading, []

    def para(self, text: str, small: bool = False) -> None:
        self.parts.append(f'<p{" class=small" if small else ""}>{text_html(text)}</p>')

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{text_html(text)}</p>')

    def tiles(self, values: dict[str, str]) -> None:
        t = "".join(f'<div class="tile"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
                    for k, v in values.items())
        self.parts.append(f'<div class="tiles">{t}</div>')

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> None:
        self.parts.append(html_table(columns, rows, cls))

    def details(self, summary: str, columns: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> None:
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary>{html_table(columns, rows, cls)}</details>")

    def figure(self, fig: "Figure", caption: str) -> None:
        self.parts.append(f'<figure class="fig">{img_tag(fig, caption)}<figcaption>{text_html(caption)}</figcaption></figure>')

    def image_file(self, path: Path, caption: str) -> None:
        arr = np.asarray(Image.open(path).convert("RGB"))
        self.parts.append(f'<figure class="fig">{img_tag(arr, caption)}<figcaption>{text_html(caption)}</figcaption></figure>')

    def cards(self, cards: Sequence[tuple[list[np.ndarray], list[str], Path]], data_root: Path | None = None,
              narrow: bool = False) -> None:
        """Picture cards: (pictures side by side, caption lines as safe HTML, the file shown relative to
        `data_root` with its full path as a tooltip); `narrow` for cards of one picture."""
        out = []
        for pics, lines, file in cards:
            rel = _relative(Path(file), data_root)
            imgs = "".join(img_tag(p, rel) for p in pics)
            cap = "<br>".join(lines)
            out.append(f'<figure class="card"><div class="pics">{imgs}</div><figcaption>{cap}<div class="file" '
                       f'title="{html.escape(str(Path(file).resolve()))}">{html.escape(rel)}</div></figcaption></figure>')
        self.parts.append(f'<div class="cards{" narrow" if narrow else ""}">{"".join(out)}</div>')

    def render(self) -> str:
        return f'<section id="{self.id}"><h2>{html.escape(self.heading)}</h2>{"".join(self.parts)}</section>'


class Page:
    """The report page: a header, a table of contents and sections, rendered as one HTML document."""

    def __init__(self, title: str):
        self.title, self.head, self.sections = title, "", []

    def header(self, title: str, subtitle: str) -> None:
        self.head = f"<header><h1>{html.escape(title)}</h1><div class=sub>{html.escape(subtitle)}</div></header>"

    def section(self, sid: str, heading: str) -> Section:
        s = Section(sid, heading)
        self.sections.append(s)
        return s

    def render(self) -> str:
        nav = "".join(f'<a href="#{s.id}">{html.escape(s.heading)}</a>' for s in self.sections)
        body = "".join(s.render() for s in self.sections)
        return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>"
                f"<body><main>{self.head}<nav>{nav}</nav>{body}</main></body></html>\n")


def _relative(file: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(file.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(file)
