"""The upload page at `/`: one self-contained HTML file (no CDN, no external asset; the machine may be offline).

Pick or drop photos, see each one with its top-k bars. Class names and file names come from the model file
and the user: they are only ever put into the page as text (textContent), never as HTML, and the page's
Content-Security-Policy allows only its own inline script and style (by hash) and requests to this server.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bar: #3b6fd8; --bg: #f6f7f9; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header, main { max-width: 980px; margin: 0 auto; padding: 16px; }
h1 { font-size: 20px; margin: 8px 0 2px; }
#model { color: var(--muted); margin: 0; overflow-wrap: anywhere; }
#drop { display: block; border: 2px dashed var(--line); border-radius: 10px; background: #fff; padding: 28px 16px;
        text-align: center; cursor: pointer; }
#drop.over { border-color: var(--bar); background: #eef3fd; }
#drop input { display: block; margin: 12px auto 0; max-width: 100%; }
#keyrow { margin: 12px 0 0; }
#keyrow input { font: inherit; padding: 4px 8px; width: min(320px, 100%); }
#status { color: var(--muted); min-height: 1.4em; }
#results { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px; min-width: 0; }
.card img { width: 100%; height: 180px; object-fit: contain; background: #eceef2; border-radius: 6px; }
.name { color: var(--muted); font-size: 13px; margin: 6px 0; overflow-wrap: anywhere; }
.label { font-weight: 600; font-size: 17px; margin: 2px 0 6px; overflow-wrap: anywhere; }
.labels { margin: 0 0 6px; overflow-wrap: anywhere; }
.bar { display: grid; grid-template-columns: minmax(0, 1fr) 56px; gap: 6px; align-items: center; margin: 3px 0; }
.bar .track { position: relative; height: 22px; background: #eceef2; border-radius: 4px; overflow: hidden; }
.bar .fill { position: absolute; inset: 0 auto 0 0; background: var(--bar); opacity: .28; }
.bar .text { position: relative; padding: 0 6px; line-height: 22px; font-size: 13px; white-space: nowrap;
             overflow: hidden; text-overflow: ellipsis; display: block; }
.bar .pct { text-align: right; font-variant-numeric: tabular-nums; font-size: 13px; }
.error { color: var(--bad); overflow-wrap: anywhere; }
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);  // text, never HTML: labels come from the model file
  return e;
};
const keyHeaders = () => { const k = $("key").value.trim(); return k ? {"X-API-Key": k} : {}; };
const pct = (p) => (Math.max(0, Math.min(1, Number(p) || 0)) * 100);

async function loadInfo() {
  try {
    const r = await fetch("info", {headers: keyHeaders()});
    if (r.status === 401) {
      $("keyrow").hidden = false;
      $("model").textContent = "This server needs an API key: enter it below.";
      return;
    }
    const info = await r.json();
    $("model").textContent = info.arch + " \\u00b7 " + info.classes.length + " classes \\u00b7 size " + info.size +
      " \\u00b7 " + info.model_file;
  } catch (e) {
    $("model").textContent = "Cannot reach the server (" + e + ").";
  }
}

function showPrediction(out, pred) {
  out.replaceChildren();
  out.append(el("p", "label", pred.label));
  if (Array.isArray(pred.labels)) {
    out.append(el("p", "labels", "over threshold: " + (pred.labels.length ? pred.labels.join(", ") : "none")));
  }
  for (const t of pred.top_k || []) {
    const row = el("div", "bar"), track = el("div", "track"), fill = el("span", "fill");
    fill.style.width = pct(t.probability).toFixed(1) + "%";
    track.append(fill, el("span", "text", t.label));
    track.title = t.label;
    row.append(track, el("span", "pct", pct(t.probability).toFixed(1) + "%"));
    out.append(row);
  }
}

function showError(out, status, data) {
  out.replaceChildren(el("p", "error", (data && data.detail) || ("The server answered HTTP " + status + ".")));
  if (status === 401) $("keyrow").hidden = false;
}

async function predictOne(file, out) {
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const r = await fetch("predict", {method: "POST", body, headers: keyHeaders()});
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.ok && data && !data.error) showPrediction(out, data); else showError(out, r.status, data);
  } catch (e) {
    showError(out, 0, {detail: "The request failed: " + e});
  }
}

let pending = [], running = 0, done = 0, total = 0;
const CONCURRENT = 4;
function pump() {
  while (running < CONCURRENT && pending.length) {
    const [file, out] = pending.shift();
    running++;
    predictOne(file, out).finally(() => {
      running--; done++;
      $("status").textContent = done + " of " + total + " predicted";
      pump();
    });
  }
}

function addFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  total += list.length;
  $("status").textContent = done + " of " + total + " predicted";
  const batch = document.createDocumentFragment();  // this batch in the order chosen, above earlier ones
  for (const file of list) {
    const card = el("article", "card"), img = el("img"), out = el("div", "out", "predicting\\u2026");
    img.alt = "";
    const url = URL.createObjectURL(file);
    img.src = url;
    img.addEventListener("load", () => URL.revokeObjectURL(url));
    img.addEventListener("error", () => { URL.revokeObjectURL(url); img.style.visibility = "hidden"; });
    card.append(img, el("p", "name", file.name), out);
    batch.append(card);
    pending.push([file, out]);
  }
  $("results").prepend(batch);
  pump();
}

const drop = $("drop"), input = $("files");
input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => addFiles(e.dataTransfer && e.dataTransfer.files));
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());
$("key").addEventListener("change", loadInfo);
loadInfo();
"""

BODY = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>visiontune serve</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>visiontune</h1>
<p id="model">Loading the model's description&hellip;</p>
</header>
<main>
<label id="drop" for="files">Drop photos here, or choose them
<input id="files" type="file" accept="image/*" multiple>
</label>
<div id="keyrow" hidden><label>API key <input id="key" type="password" autocomplete="off"></label></div>
<p id="status" role="status" aria-live="polite"></p>
<section id="results" aria-label="predictions"></section>
</main>
<script>{script}</script>
</body>
</html>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = BODY.format(style=STYLE, script=SCRIPT)
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; img-src blob: data:; "
    f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
