"""``index.html`` of an ``explain`` run: one section per file, readable in any browser.

Self-contained: the overlays are the PNGs beside it (relative links), the probability bars
are HTML, nothing is fetched from the network. A small inline script counts the images
that loaded and writes the count into the page (``#images``) and onto ``<body>``
(``data-images-loaded`` / ``data-images-total``), so a missing image is visible.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-bottom: 4px; }
section { border-top: 1px solid #ccc; padding: 12px 0 20px; }
.meta { color: #555; font-size: 13px; }
.genre { font-weight: 600; color: #1f5f99; }
table.probs { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
table.probs td { padding: 1px 6px; }
.bar { background: #8fb3d9; height: 12px; }
.bar.top { background: #1f5f99; }
.words { font-size: 14px; margin: 6px 0; }
.error { color: #a40000; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; display: block; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesTotal = imgs.length;
  document.getElementById("images").textContent =
    ok + " of " + imgs.length + " images loaded";
});
"""


def _words(top: dict) -> str:
    parts = []
    for branch, t in top.items():
        span = f"{t['time_s'][0]:.1f}-{t['time_s'][1]:.1f} s"
        if "freq_hz" in t:
            what = f"{t['freq_hz'][0]:.0f}-{t['freq_hz'][1]:.0f} Hz"
        else:
            what = "pitch classes " + " ".join(t.get("pitch_classes", []))
        parts.append(f"<b>{html.escape(branch)}</b>: {span}, {html.escape(what)}")
    return "Most attributed: " + "; ".join(parts)


def _probabilities(probs: dict[str, float], genre: str) -> str:
    rows = []
    for g, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        cls = "bar top" if g == genre else "bar"
        rows.append(f'<tr><td>{html.escape(g)}</td><td>{100 * p:.1f} %</td>'
                    f'<td><div class="{cls}" style="width:{max(1, round(300 * p))}px">'
                    f'</div></td></tr>')
    return '<table class="probs">' + "".join(rows) + "</table>"


def write_report(out_dir: Path, results: list[dict], checkpoint: str,
                 methods: list[str]) -> Path:
    """Write ``out_dir/index.html`` for ``explain``'s ``results``; returns its path."""
    out_dir = Path(out_dir)
    ok = [r for r in results if "error" not in r]
    parts = [f"<h1>Genre predictions and attributions ({len(results)} files)</h1>",
             f'<p class="meta">checkpoint {html.escape(str(checkpoint))}; maps: '
             f'{html.escape(", ".join(methods))} per branch, computed for the predicted '
             f'genre; {len(ok)} explained, {len(results) - len(ok)} with errors; '
             f'<span id="images">images not checked (scripts off)</span></p>']
    for i, r in enumerate(results):
        name = html.escape(Path(r["file"]).name)
        parts.append(f'<section id="file-{i}"><h2>{name}</h2>'
                     f'<div class="meta">{html.escape(r["file"])}</div>')
        if "error" in r:
            parts.append(f'<p class="error">error: {html.escape(r["error"])}</p></section>')
            continue
        p = r["probabilities"][r["genre"]]
        parts.append(f'<p>Predicted genre: <span class="genre">{html.escape(r["genre"])}'
                     f'</span> ({100 * p:.1f} %), {r["seconds"]:.1f} s, {r["segments"]} '
                     f'segments</p>')
        parts.append(_probabilities(r["probabilities"], r["genre"]))
        parts.append(f'<p class="words">{_words(r.get("top", {}))}</p>')
        for branch, png in r.get("pngs", {}).items():
            rel = quote(Path(os.path.relpath(png, out_dir)).as_posix())  # '#', '?', '%'
            parts.append(f'<img src="{html.escape(rel)}" alt="{name}: {html.escape(branch)} '
                         f'input and attribution maps">')
        parts.append("</section>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>mlfi-genre explain report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    path = out_dir / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
