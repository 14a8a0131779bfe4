"""The review page: one HTML document whose script fetches the issues and decisions from the local server and
builds every element with `textContent` and `setAttribute` (file and class names are untrusted: they never
become markup). The token is read from the page's own URL and sent with each request; nothing is inlined but
the script's nonce, which the Content-Security-Policy header requires for it to run."""

from __future__ import annotations

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;background:#f4f5f7}
header{position:sticky;top:0;z-index:2;background:#fff;padding:8px 14px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.1rem;margin:0 0 4px;word-break:break-word}
#counts{font-variant-numeric:tabular-nums}
#help{color:#5b6470;font-size:.8rem}
#tabs{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}
#tabs button{border:0;border-radius:12px;padding:3px 10px;background:#e3e7ec;cursor:pointer;font:inherit}
#tabs button.active{background:#1d2329;color:#fff}
#status{font-size:.8rem;color:#5b6470;min-height:1.2em}
#status.error{color:#b00020;font-weight:600}
main{padding:10px 14px;display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,260px),1fr));gap:10px}
.card{background:#fff;border-radius:8px;padding:8px;border:2px solid transparent;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card.current{border-color:#2962ff}
.card[data-decision=keep]{background:#eef8f0}
.card[data-decision=delete]{background:#fdecec}
.card[data-decision=relabel]{background:#eef2fd}
.pics{display:grid;grid-auto-flow:column;grid-auto-columns:1fr;gap:4px}
.pics img{width:100%;height:200px;object-fit:contain;border-radius:4px;background:#e3e7ec}
.file{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.75rem;color:#5b6470;word-break:break-all}
.labels b{font-weight:600}
.reason{font-size:.8rem;color:#5b6470}
.group{font-size:.75rem;background:#fff3cd;border-radius:4px;padding:0 4px}
.decision{font-weight:600;min-height:1.3em}
.actions{display:flex;flex-wrap:wrap;gap:4px;margin-top:4px}
.actions button,.actions select{font:inherit;font-size:.8rem;padding:2px 6px;border-radius:4px;border:1px solid #c8ced6;
background:#f7f8fa;cursor:pointer;max-width:100%}
.empty{color:#5b6470;font-style:italic}
"""

SCRIPT = r"""
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token") || "";
  const KINDS = ["label", "leak", "duplicate", "odd"];
  const TITLES = {label: "label issues", leak: "leaks", duplicate: "duplicates", odd: "odd files"};
  let state = null, kind = "label", cur = 0;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function api(path, params) {
    const q = new URLSearchParams(Object.assign({token: token}, params || {}));
    return "/api/" + path + "?" + q.toString();
  }
  function status(text, error) {
    const s = $("status");
    s.textContent = text;
    s.className = error ? "error" : "";
  }
  function rows() { return state.issues.filter((r) => r.kind === kind); }
  function decisionText(d) {
    if (!d) return "undecided";
    if (d.action === "relabel") return "relabel to " + d.label;
    return d.action === "keep" ? "keep" : "delete";
  }
  function counts() {
    const files = new Set(state.issues.map((r) => r.file));
    const c = {keep: 0, delete: 0, relabel: 0};
    for (const f of files) { const d = state.decisions[f]; if (d) c[d.action] += 1; }
    const decided = c.keep + c.delete + c.relabel;
    $("counts").textContent = "decided " + decided + " of " + files.size + " files \u00b7 keep " + c.keep +
      " \u00b7 delete " + c.delete + " \u00b7 relabel " + c.relabel;
  }
  function tabs() {
    const t = $("tabs");
    t.replaceChildren();
    for (const k of KINDS) {
      const n = state.issues.filter((r) => r.kind === k).length;
      const b = el("button", {type: "button", "data-kind": k, class: k === kind ? "active" : ""}, TITLES[k] + " (" + n + ")");
      b.addEventListener("click", () => { kind = k; cur = 0; render(); });
      t.appendChild(b);
    }
  }
  function camLabel(r) {
    if (state.multi_label) {
      const g = new Set(r.given_label ? r.given_label.split(" ") : []);
      const s = new Set(r.suggested_label ? r.suggested_label.split(" ") : []);
      for (const x of s) if (!g.has(x)) return x;
      for (const x of g) if (!s.has(x)) return x;
      return "";
    }
    return r.suggested_label || r.given_label || "";
  }
  function card(r, pos) {
    const d = state.decisions[r.file];
    const c = el("article", {class: "card", "data-file": r.file, "data-index": String(r.i),
                             "data-decision": d ? d.action : "undecided", tabindex: "-1"});
    const pics = el("div", {class: "pics"});
    pics.appendChild(el("img", {src: api("image", {file: r.file}), alt: r.file, loading: "lazy"}));
    c.appendChild(pics);
    if (r.group) c.appendChild(el("span", {class: "group"}, "group " + r.group + " \u00b7 " + r.split));
    c.appendChild(el("div", {class: "file"}, r.file));
    const lab = el("div", {class: "labels"});
    if (r.split !== "test") {
      lab.appendChild(document.createTextNode("given "));
      lab.appendChild(el("b", {class: "given"}, r.given_label || "-"));
    } else {
      lab.appendChild(document.createTextNode("test set (unlabelled)"));
    }
    if (r.suggested_label) {
      lab.appendChild(document.createTextNode(" \u2192 suggested "));
      lab.appendChild(el("b", {class: "suggested"}, r.suggested_label));
      if (r.suggested_prob !== null && r.suggested_prob !== undefined)
        lab.appendChild(document.createTextNode(" (p=" + Number(r.suggested_prob).toFixed(2) + ")"));
    }
    c.appendChild(lab);
    c.appendChild(el("div", {class: "reason"}, "score " + Number(r.score).toFixed(3) + " \u00b7 " + r.reason));
    c.appendChild(el("div", {class: "decision"}, decisionText(d)));
    const a = el("div", {class: "actions"});
    const btn = (name, text, fn) => { const b = el("button", {type: "button", "data-action": name}, text);
      b.addEventListener("click", (ev) => { ev.stopPropagation(); cur = pos; fn(); }); a.appendChild(b); };
    btn("keep", "keep [k]", () => decide(r, "keep"));
    btn("delete", "delete [d]", () => decide(r, "delete"));
    if (r.split !== "test") {
      if (r.suggested_label && r.suggested_label !== r.given_label)
        btn("relabel-suggested", "relabel to " + r.suggested_label + " [r]", () => decide(r, "relabel", r.suggested_label));
      if (!state.multi_label) {
        const sel = el("select", {"data-action": "relabel-to", "aria-label": "relabel to a class"});
        sel.appendChild(el("option", {value: ""}, "relabel to\u2026"));
        state.classes.forEach((k, j) => { if (k !== r.given_label)
          sel.appendChild(el("option", {value: k}, (j < 9 ? "[" + (j + 1) + "] " : "") + k)); });
        sel.appendChild(el("option", {value: "/new"}, "a new class\u2026"));
        sel.addEventListener("click", (ev) => ev.stopPropagation());
        sel.addEventListener("change", () => {
          cur = pos;
          let v = sel.value;
          if (v === "/new") { v = (prompt("New class name") || "").trim(); }
          if (v) decide(r, "relabel", v);
        });
        a.appendChild(sel);
      }
    }
    btn("undo", "undecide [u]", () => decide(r, "undecided"));
    btn("cam", "Grad-CAM [g]", () => cam(r, c));
    c.appendChild(a);
    c.addEventListener("click", () => { cur = pos; focus(); });
    return c;
  }
  function cam(r, c) {
    const pics = c.querySelector(".pics");
    const old = pics.querySelector("img.cam");
    if (old) { old.remove(); return; }
    pics.appendChild(el("img", {class: "cam", src: api("cam", {file: r.file, label: camLabel(r)}),
                                alt: "Grad-CAM of " + r.file}));
  }
  function render() {
    tabs(); counts();
    const m = $("cards");
    m.replaceChildren();
    const list = rows();
    if (!list.length) m.appendChild(el("p", {class: "empty"}, "Nothing of this kind was found."));
    list.forEach((r, pos) => m.appendChild(card(r, pos)));
    focus();
  }
  function focus() {
    const cards = document.querySelectorAll("#cards .card");
    if (!cards.length) return;
    cur = Math.max(0, Math.min(cur, cards.length - 1));
    cards.forEach((c, j) => c.classList.toggle("current", j === cur));
    cards[cur].scrollIntoView({block: "nearest"});
  }
  function update(file) {
    for (const c of document.querySelectorAll("#cards .card")) {
      if (c.getAttribute("data-file") !== file) continue;
      const d = state.decisions[file];
      c.setAttribute("data-decision", d ? d.action : "undecided");
      c.querySelector(".decision").textContent = decisionText(d);
    }
    counts();
  }
  function nextUndecided() {
    const list = rows();
    for (let j = cur + 1; j < list.length; j++) if (!state.decisions[list[j].file]) { cur = j; return; }
    cur = Math.min(cur + 1, list.length - 1);
  }
  async function decide(r, action, label) {
    status("saving\u2026");
    try {
      const res = await fetch("/api/decide", {method: "POST", headers: {"Content-Type": "application/json",
        "X-Visiontune-Token": token}, body: JSON.stringify({file: r.file, action: action, label: label || null, index: r.i})});
      const body = await res.json();
      if (!res.ok) { status(body.error || ("error " + res.status), true); return; }
      if (body.decision.action === "undecided") delete state.decisions[r.file];
      else state.decisions[r.file] = body.decision;
      update(r.file);
      status("saved: " + r.file + " \u2192 " + decisionText(state.decisions[r.file]));
      if (action !== "undecided") { nextUndecided(); focus(); }
    } catch (e) { status("not saved: " + e, true); }
  }
  function key(ev) {
    if (ev.target && (ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const list = rows(), r = list[cur];
    const k = ev.key;
    if (k === "ArrowDown" || k === "ArrowRight" || k === "j" || k === "n") { cur++; focus(); }
    else if (k === "ArrowUp" || k === "ArrowLeft" || k === "p") { cur--; focus(); }
    else if (k === "]" || k === "[") {
      const i = KINDS.indexOf(kind) + (k === "]" ? 1 : KINDS.length - 1);
      kind = KINDS[i % KINDS.length]; cur = 0; render();
    }
    else if (!r) return;
    else if (k === "k") decide(r, "keep");
    else if (k === "d" || k === "Delete") decide(r, "delete");
    else if (k === "u") decide(r, "undecided");
    else if (k === "r" && r.suggested_label && r.split !== "test") decide(r, "relabel", r.suggested_label);
    else if (k === "g") cam(r, document.querySelectorAll("#cards .card")[cur]);
    else if (/^[1-9]$/.test(k) && !state.multi_label && r.split !== "test") {
      const c = state.classes[Number(k) - 1];
      if (c !== undefined) decide(r, "relabel", c);
    }
    else return;
    ev.preventDefault();
  }
  async function load() {
    try {
      const res = await fetch(api("state"));
      const body = await res.json();
      if (!res.ok) { status(body.error || ("error " + res.status), true); return; }
      state = body;
      $("title").textContent = "visiontune clean: " + state.dataset;
      document.title = "visiontune clean: " + state.dataset;
      $("where").textContent = state.data + " \u00b7 " + state.folder;
      const last = state.cursor;
      if (last && state.issues[last.index]) {
        const r = state.issues[last.index];
        kind = r.kind;
        cur = rows().findIndex((x) => x.i === r.i);
        nextUndecided();
      } else {
        kind = KINDS.find((k) => state.issues.some((r) => r.kind === k)) || "label";
      }
      render();
      if (state.applied) status("note: this clean folder was applied (" + state.applied + "); new decisions apply after --undo", false);
      else if (state.skipped_lines) status("note: " + state.skipped_lines + " unreadable line(s) of journal.jsonl were skipped", false);
      document.body.setAttribute("data-ready", "1");
    } catch (e) { status("cannot load: " + e, true); }
  }
  document.addEventListener("keydown", key);
  load();
})();
"""

HELP = ("keys: \u2190/\u2192 or j/n, p: move \u00b7 k keep \u00b7 d delete \u00b7 r relabel to the suggestion \u00b7 "
        "1-9 relabel to class N \u00b7 u undecide \u00b7 g Grad-CAM \u00b7 [ ] other kind. Every decision is saved at once; "
        "nothing in the data folder changes until visiontune clean --apply.")


def render_page(nonce: str) -> str:
    """The page's HTML; `nonce` is the CSP nonce of this response (URL-safe characters only)."""
    import html

    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="no-referrer">'
            f"<title>visiontune clean</title><style>{CSS}</style></head><body>"
            f'<header><h1 id="title">visiontune clean</h1><div id="where" class="file"></div>'
            f'<div id="counts"></div><div id="help">{html.escape(HELP)}</div><nav id="tabs"></nav>'
            f'<div id="status" role="status"></div></header><main id="cards"></main>'
            f'<script nonce="{html.escape(nonce)}">{SCRIPT}</script></body></html>\n')
