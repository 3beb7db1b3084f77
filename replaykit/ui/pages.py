"""The HTML of ``replaykit ui``: the run list (a run's page is its timeline, ``timeline_html``).

Every value from the store is escaped (``html.escape``); the pages load nothing from elsewhere.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from ..history import Status, WorkflowInfo
from ..views import when

_STYLE = """body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; }
header { padding: 12px 16px; border-bottom: 1px solid #d0d7de; background: #f6f8fa; }
h1 { font-size: 16px; margin: 0 0 8px; } form { display: flex; gap: 8px; flex-wrap: wrap; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 4px 12px;
border-bottom: 1px solid #eaeef2; white-space: nowrap; } th { color: #57606a; font-weight: 600; }
td.id a { font-family: ui-monospace, monospace; } .badge { padding: 0 8px; border-radius: 10px; color: #fff;
background: #57606a; } .completed { background: #1a7f37; } .failed, .timed_out { background: #cf222e; }
.running { background: #0969da; } .cancelled, .paused { background: #9a6700; } .empty { padding: 16px; }"""


def run_list(db: str, runs: Sequence[WorkflowInfo], *, status: str = "", workflow: str = "", prefix: str = "",
             refresh: int = 5, more: bool = False) -> str:
    """The run list, newest first, with its filter form; refreshed every ``refresh`` seconds. ``more``:
    older runs match too, not shown."""
    options = "".join(f'<option value="{s.value}"{" selected" if s.value == status else ""}>{s.value}</option>'
                      for s in Status)
    rows = "".join(
        f'<tr data-status="{i.status.value}"><td class="id"><a href="runs/{quote(i.workflow_id, safe="")}">'
        f"{html.escape(i.workflow_id)}</a></td><td>{html.escape(i.name)}</td>"
        f'<td><span class="badge {i.status.value}">{i.status.value}</span></td>'
        f"<td>{when(i.created_at)}</td><td>{when(i.updated_at)}</td>"
        f"<td>{'' if i.custom_status is None else html.escape(str(i.custom_status))[:80]}</td>"
        f"<td>{html.escape(i.problem or '')}</td></tr>" for i in runs)
    query = urlencode({k: v for k, v in (("status", status), ("workflow", workflow), ("prefix", prefix)) if v})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta http-equiv="refresh" content="{refresh}">
<title>replaykit: {html.escape(db)}</title><style>{_STYLE}</style></head>
<body><header><h1>{f"the newest {len(runs)} runs" if more else f"{len(runs)} runs"} in {html.escape(db)}</h1>
<form method="get" action="./">
<select name="status"><option value="">any status</option>{options}</select>
<input name="workflow" placeholder="workflow" value="{html.escape(workflow)}">
<input name="prefix" placeholder="id starts with" value="{html.escape(prefix)}">
<button>filter</button> <a href="api/runs{'?' + query if query else ''}">JSON</a> <a href="openapi.json">API</a>
</form></header>
{'<table><tr><th>ID</th><th>WORKFLOW</th><th>STATUS</th><th>CREATED</th><th>UPDATED</th><th>CUSTOM STATUS</th>'
 '<th>PROBLEM</th></tr>' + rows + '</table>' if runs else '<p class="empty">No runs match.</p>'}
</body></html>"""
