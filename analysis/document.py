"""The report as a document: blocks (headings, paragraphs, bullets, tables, images) rendered to Markdown
and to one self-contained HTML file (images embedded as base64), and the number formats its cells use.

    doc = Doc(out)                      # image paths are written relative to `out` in the Markdown
    doc.h(2, "Title"); doc.p("text with **bold** and `code`"); doc.table(df, "all_rows.csv")
    (out / "report.md").write_text(doc.markdown()); (out / "report.html").write_text(doc.html("Title"))
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MAX_MD_ROWS = 40  # long tables are cut in the report; the CSV always has every row


@dataclass
class Doc:
    """A report as blocks, rendered to both Markdown and HTML."""
    out: Path
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, df: pd.DataFrame, csv_name: str | None = None, max_rows: int = MAX_MD_ROWS):
        note = ""
        if len(df) > max_rows:
            note = f"Showing {max_rows} of {len(df)} rows" + (f"; all rows in `{csv_name}`." if csv_name else ".")
            df = df.head(max_rows)
        self.blocks.append(("table", df.astype(str)))
        if note:
            self.p(note)

    def image(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        lines = []
        for b in self.blocks:
            if b[0] == "h":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "ul":
                lines += [f"- {it}" for it in b[1]] + [""]
            elif b[0] == "table":
                lines += _md_table(b[1]) + [""]
            elif b[0] == "img":
                rel = b[1].relative_to(self.out) if b[1].is_relative_to(self.out) else b[1]
                lines += [f"![{b[2]}]({rel.as_posix()})", "", f"*{b[2]}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>", _CSS, "</head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                parts.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(it)}</li>" for it in b[1]) + "</ul>")
            elif b[0] == "table":
                df = b[1]
                head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
                body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>"
                               for row in df.itertuples(index=False))
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(b[2])}\">"
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)


_CSS = """<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.86em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0} img{max-width:100%} figcaption{font-size:0.85em;color:#555}
code{background:#f3f3f3;padding:0 3px}
</style>"""


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans."""
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


def _md_cell(v: str) -> str:
    return v.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> list[str]:
    cols = [_md_cell(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return lines


# ---------------------------------------------------------------- formatting
def fnum(x, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if (abs(x) >= 1000 or (x != 0 and abs(x) < 1e-3)) else f"{x:.{digits}f}"


def fci(mean: float, lo: float, hi: float, n: int) -> str:
    """'0.812 ± 0.034' (95% t-CI), or a plain statement when a CI is impossible."""
    if n == 0 or not np.isfinite(mean):
        return "n/a (no values)"
    if n == 1 or not np.isfinite(lo):
        return f"{fnum(mean)} (1 seed: no CI)"
    # a half-width of float round-off (identical values over seeds) reads as 0, not "3.33e-16"
    half = (hi - lo) / 2
    return f"{fnum(mean)} ± {fnum(half) if abs(half) >= 5e-7 else fnum(0.0)}"


def fdiff(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo):
        return f"{mean:+.3f} (no CI: too few seeds)"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
