"""Small HTML helpers shared by the display views (no IPython import here)."""
from __future__ import annotations

import html
import re
from typing import Any, Iterable, Optional

CSS = """<style>
.xnb{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.45;max-width:100%}
.xnb table{border-collapse:collapse;margin:4px 0}
.xnb th,.xnb td{border:1px solid #ddd;padding:3px 8px;text-align:left !important;vertical-align:top}
.xnb th{background:rgba(127,127,127,.12)}
.xnb .msg{border-left:3px solid #aaa;padding:4px 10px;margin:6px 0;border-radius:2px}
.xnb .role{font-weight:600;font-size:11px;text-transform:uppercase;opacity:.75}
.xnb .user{border-color:#4a7bd0}.xnb .assistant{border-color:#3a9b5d}.xnb .system{border-color:#999}
.xnb .tool{border-color:#c98a1a}
.xnb details{margin:4px 0;opacity:.85}.xnb summary{cursor:pointer;font-style:italic}
.xnb .meta{font-size:11px;opacity:.7}.xnb .err{color:#c0392b}.xnb .hint{font-size:11px;opacity:.65}
.xnb pre{white-space:pre-wrap;margin:2px 0;background:rgba(127,127,127,.08);padding:4px}
.xnb .bar{display:inline-block;height:9px;background:#3a9b5d;vertical-align:middle}
</style>"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def wrap(body: str, title: Optional[str] = None) -> str:
    head = f"<div class='meta'><b>{esc(title)}</b></div>" if title else ""
    return f"{CSS}<div class='xnb'>{head}{body}</div>"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], raw_cols: Iterable[int] = ()) -> str:
    """An HTML table; cells are escaped except in ``raw_cols`` (already HTML)."""
    raw = set(raw_cols)
    out = ["<table><thead><tr>", "".join(f"<th>{esc(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for row in rows:
        cells = [(str(c) if i in raw else esc(c)) for i, c in enumerate(row)]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def text_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A fixed-width text table for text/plain."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [min(60, max(len(r[i]) for r in cells)) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c[:60].ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: Any) -> str:
    if n is None or n == "":
        return "?"
    try:
        n = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


_CODE = re.compile(r"```(\w*)\n(.*?)```", re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_ITAL = re.compile(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])")


def markdown(text: Any) -> str:
    """A small, safe Markdown → HTML (code blocks, inline code, bold, italics, headings, lists,
    paragraphs). Everything is escaped first, so model output can never inject HTML."""
    text = ("" if text is None else str(text)).replace("\x00", "\ufffd")   # NUL marks the code blocks below
    blocks: list[str] = []

    def keep(match: "re.Match[str]") -> str:
        blocks.append(f"<pre><code>{esc(match.group(2))}</code></pre>")
        return f"\x00{len(blocks) - 1}\x00"

    text = _CODE.sub(keep, text)
    out: list[str] = []
    in_list = False
    for line in esc(text).split("\n"):
        line = _INLINE.sub(r"<code>\1</code>", line)
        line = _BOLD.sub(r"<b>\1</b>", line)
        line = _ITAL.sub(r"<i>\1</i>", line)
        stripped = line.lstrip()
        if stripped.startswith(("- ", "* ")) or re.match(r"\d+\. ", stripped):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{stripped.split(' ', 1)[1] if ' ' in stripped else ''}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        m = re.match(r"(#{1,6}) (.*)", stripped)
        if m:
            level = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{level}>{m.group(2)}</h{level}>")
        else:
            out.append(line + "<br>")
    if in_list:
        out.append("</ul>")
    result = "".join(out)
    if result.endswith("<br>"):
        result = result[:-4]
    return re.sub("\x00(\\d+)\x00", lambda m: blocks[int(m.group(1))], result)
