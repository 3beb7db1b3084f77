"""A timeline (``replaykit/timeline.py``) as one self-contained HTML file: no network, no CDN.

The run's data travels as JSON inside the page and is put on it with ``textContent`` only, so
nothing from the store is ever parsed as HTML or run as script; the page's content security
policy forbids loading anything at all.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from .timeline import Lane, Timeline
from .views import jsonable


def timeline_data(t: Timeline, origin: float | None = None) -> dict[str, Any]:
    """The timeline as the page's JSON; times in seconds from ``origin`` (the top run's start)."""
    origin = t.start if origin is None else origin
    return {
        "id": t.info.workflow_id, "workflow": t.info.name, "status": t.info.status.value,
        "created": t.info.created_at, "updated": t.info.updated_at, "custom_status": jsonable(t.info.custom_status),
        "start": t.start - origin, "end": t.end - origin, "exact": t.exact, "waiting_at": t.waiting_at,
        "note": t.note, "error": t.error, "result": t.result,
        "marks": [{"kind": m.kind, "name": m.name, "at": m.at - origin, "outcome": m.outcome} for m in t.marks],
        "lanes": [_lane(lane, origin) for lane in t.lanes],
    }


def _lane(lane: Lane, origin: float) -> dict[str, Any]:
    return {"step": lane.step, "kind": lane.kind, "name": lane.name, "start": lane.start - origin,
            "end": None if lane.end is None else lane.end - origin, "outcome": lane.outcome,
            "segments": [[s.kind, s.start - origin, s.end - origin, s.outcome] for s in lane.segments],
            "value": lane.value, "error": lane.error,
            "child": None if lane.child is None else timeline_data(lane.child, origin)}


def render(t: Timeline, refresh: int | None = None) -> str:
    """The page for ``t`` (reloaded every ``refresh`` seconds, if given: ``replaykit ui`` does)."""
    data = json.dumps(timeline_data(t), ensure_ascii=True).replace("<", "\\u003c")  # never ends the script
    values = {"title": html.escape(t.info.workflow_id), "data": data,
              "refresh": "" if refresh is None else f'<meta http-equiv="refresh" content="{int(refresh)}">'}
    return _SLOT.sub(lambda m: values[m.group(1)], _PAGE)  # one pass: a value is never read as a slot


_SLOT = re.compile(r"\{\{(title|refresh|data)\}\}")
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
{{refresh}}<title>replaykit: {{title}}</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; }
header { padding: 12px 16px; border-bottom: 1px solid #d0d7de; background: #f6f8fa; }
h1 { font-size: 16px; margin: 0 0 6px; } h1 .wf { color: #57606a; font-weight: normal; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; background: #57606a; }
.badge.completed { background: #1a7f37; } .badge.failed, .badge.timed_out { background: #cf222e; }
.badge.running { background: #0969da; } .badge.cancelled, .badge.paused { background: #9a6700; }
.facts { color: #57606a; } .facts b { color: #1b1f24; font-weight: 600; }
.note { color: #9a6700; }
#axis { position: sticky; top: 0; background: #fff; height: 22px; border-bottom: 1px solid #d0d7de;
        margin-left: 260px; z-index: 2; }
#axis span { position: absolute; top: 3px; font-size: 11px; color: #57606a; border-left: 1px solid #d0d7de;
             padding-left: 3px; white-space: nowrap; }
.lane { display: flex; height: 20px; border-bottom: 1px solid #f0f2f4; cursor: pointer; }
.lane:hover { background: #f6f8fa; } .lane.chosen { background: #ddf4ff; }
.label { width: 252px; padding: 0 4px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
         flex: none; font-family: ui-monospace, monospace; font-size: 12px; line-height: 20px; }
.track { position: relative; flex: 1; margin-right: 16px; }
.seg { position: absolute; top: 4px; height: 12px; min-width: 2px; border-radius: 2px; background: #2da44e; }
.seg.error { background: #cf222e; } .seg.timeout { background: #bc4c00; }
.seg.retry { background: repeating-linear-gradient(45deg, #d0d7de 0 3px, #fff 3px 6px); }
.seg.waiting { background: repeating-linear-gradient(90deg, #0969da 0 6px, #bbdfff 6px 12px); }
.lane.failed .label { color: #cf222e; font-weight: 600; }
.children { border-left: 3px solid #d0d7de; margin-left: 8px; }
.mark { position: absolute; top: 0; bottom: 0; width: 0; border-left: 2px solid #8c959f; }
.mark.cancel { border-color: #cf222e; } .mark.result.error { border-color: #cf222e; }
#details { position: fixed; right: 0; top: 0; bottom: 0; width: 42%; overflow: auto; background: #fff;
           border-left: 1px solid #d0d7de; box-shadow: -4px 0 12px #0002; padding: 12px 16px; z-index: 3; }
#details h2 { font-size: 14px; margin: 0 0 8px; } #details dt { color: #57606a; }
#details dd { margin: 0 0 6px; white-space: pre-wrap; word-break: break-word; }
#details pre { background: #fff8f8; border: 1px solid #ffcecb; padding: 8px; overflow: auto; font-size: 12px; }
#close { float: right; cursor: pointer; border: 0; background: none; font-size: 16px; }
</style></head>
<body>
<header><h1 id="title"></h1><div class="facts" id="facts"></div><div class="note" id="note"></div></header>
<div id="axis"></div><div id="lanes"></div>
<aside id="details" hidden><button id="close" title="close">&times;</button><h2 id="d-title"></h2>
<dl id="d-facts"></dl><pre id="d-traceback" hidden></pre></aside>
<script type="application/json" id="data">{{data}}</script>
<script>
"use strict";
const t0 = performance.now();
const run = JSON.parse(document.getElementById("data").textContent);
const span = Math.max(run.end - run.start, 1e-3);
const pct = s => (100 * (s - run.start) / span) + "%";
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text; return e; };
function dur(s) { if (s === null || s === undefined) return "";
  const a = Math.abs(s); if (a < 1) return (s * 1000).toFixed(a < 0.01 ? 2 : 0) + " ms";
  if (a < 120) return s.toFixed(a < 10 ? 2 : 1) + " s"; if (a < 7200) return (s / 60).toFixed(1) + " min";
  if (a < 172800) return (s / 3600).toFixed(1) + " h"; return (s / 86400).toFixed(1) + " d"; }
const when = s => new Date((run.created + s - run.start) * 1000).toISOString();
const title = document.getElementById("title");
title.append(el("span", "", run.id + " "), el("span", "wf", run.workflow + " "),
             el("span", "badge " + run.status, run.status));
const facts = document.getElementById("facts");
const fact = (k, v) => { facts.append(el("span", "", k + " "), el("b", "", v), el("span", "", "   ")); };
fact("started", new Date(run.created * 1000).toISOString()); fact("took", dur(run.end - run.start));
fact("steps", String(run.lanes.length));
if (run.custom_status !== null) fact("custom status", JSON.stringify(run.custom_status));
if (run.waiting_at) fact("waiting at", run.waiting_at);
if (run.result !== null) fact("result", run.result);
if (run.error) fact("failed", run.error.type + ": " + run.error.message);
document.getElementById("note").textContent = run.note ? run.note : (run.exact ? "" :
  "Bars start when the step before them was recorded (pass -m MODULE to replay the code for exact starts).");
const axis = document.getElementById("axis");
for (let i = 0; i <= 8; i++) { const s = run.start + span * i / 8; const tick = el("span", "", dur(s - run.start));
  tick.style.left = pct(s); if (i === 8) tick.style.transform = "translateX(-100%)"; axis.append(tick); }
const details = document.getElementById("details");
document.getElementById("close").onclick = () => { details.hidden = true; };
let chosen = null;
function show(row, lane, where) {
  if (chosen) chosen.classList.remove("chosen"); chosen = row; row.classList.add("chosen");
  details.hidden = false;
  document.getElementById("d-title").textContent = "step " + lane.step + ": " + lane.kind + " " + lane.name;
  const dl = document.getElementById("d-facts"); dl.replaceChildren();
  const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", "", k), el("dd", "", v)); };
  add("run", where); add("outcome", lane.outcome); add("yielded", when(lane.start));
  add("answered", lane.end === null ? "not yet" : when(lane.end));
  add("took", lane.end === null ? "" : dur(lane.end - lane.start));
  const attempts = lane.segments.filter(s => s[0] === "attempt").length;
  if (attempts > 1) add("attempts", String(attempts));
  add("value", lane.value);
  const tb = document.getElementById("d-traceback");
  if (lane.error) { add("error", lane.error.type + ": " + lane.error.message); tb.textContent = lane.error.traceback;
    tb.hidden = false; } else { tb.hidden = true; tb.textContent = ""; }
}
function lanes(r, into) {
  const frag = document.createDocumentFragment();
  for (const lane of r.lanes) {
    const row = el("div", "lane" + (lane.outcome === "error" || lane.outcome === "timeout" ? " failed" : ""));
    row.dataset.step = lane.step; row.dataset.outcome = lane.outcome;
    row.append(el("div", "label", lane.step + " " + lane.kind + " " + lane.name));
    const track = el("div", "track");
    const segs = lane.segments.length ? lane.segments : [["attempt", lane.start, lane.end === null ? run.end : lane.end,
      lane.outcome === "waiting" ? "waiting" : lane.outcome]];
    for (const [kind, a, b, outcome] of segs) {
      const seg = el("div", "seg " + (kind === "retry" ? "retry" : outcome));
      seg.style.left = pct(a); seg.style.width = (100 * Math.max(b - a, 0) / span) + "%";
      seg.title = lane.kind + " " + lane.name + " · " + (kind === "retry" ? "retry wait" : outcome) + " · " +
        dur(b - a);
      track.append(seg);
    }
    row.append(track); row.onclick = () => show(row, lane, r.id); frag.append(row);
    if (lane.child) {
      const kids = el("div", "children"); kids.dataset.child = lane.child.id;
      lanes(lane.child, kids); frag.append(kids);
    }
  }
  into.append(frag);
}
const box = document.getElementById("lanes");
lanes(run, box);
for (const m of run.marks) { if (m.kind === "start") continue;
  const mark = el("div", "mark " + m.kind + " " + m.outcome); mark.style.left = "calc(260px + (100% - 276px) * " +
    ((m.at - run.start) / span) + ")"; mark.title = m.kind + " " + m.name + " · " + m.outcome; box.append(mark); }
box.style.position = "relative";
document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
document.body.dataset.ready = "1";
</script></body></html>
"""
