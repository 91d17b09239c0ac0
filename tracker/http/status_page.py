"""The /status page as HTML: pure (data in, text out), so that it is tested without a server.

One page, no script: a meta refresh reloads it; the charts are inline SVG; the layout is a CSS
grid that is one column on a phone and several on a wall screen. Every text shown comes through
`esc` (vendor codes, errors and consumer names are untrusted). The vendors' cards are here; the
other cards in tracker.http.status_sections; the data and the rules that judge it in
tracker.http.status_data.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

from tracker.http import status_sections as sections
from tracker.http.status_data import StatusData, VendorStatus, error_is_current, vendor_alerts
from tracker.http.status_format import ago, age_s, badge, count, esc, hour_label, kpi, ratio, seconds

__all__ = ["REFRESH_S", "StatusData", "VendorStatus", "chart", "esc", "render", "seconds"]

REFRESH_S = 15


def _circuit(state: str | None) -> str:
    if state is None:
        return badge("not polled", "mute")
    return badge(state.replace("_", "-"), {"closed": "ok", "half_open": "warn"}.get(state, "bad"))


def _figures(f: Mapping[str, Any] | None) -> str:
    if not f or not f.get("total"):
        return '<td class="n">0</td><td class="n">–</td><td class="n">–</td>'
    return (f'<td class="n">{int(f["total"]):,}</td><td class="n">{ratio(f["delivered_ratio"])}</td>'
            f'<td class="n">{seconds(f["p50_s"])} / {seconds(f["p90_s"])}</td>')


def chart(points: Sequence[tuple[datetime, int, float | None]], title: str) -> str:
    """Volume per hour (bars, up to the peak) and delivered ratio (line, 0..100%) over the hours
    given, with every sixth hour labelled below."""
    w, h, top, bottom = 480, 140, 18, 118  # plot area between top and bottom; labels under it
    peak = max((t for _, t, _ in points), default=0) or 1
    step = w / max(1, len(points))
    bars, line, labels = [], [], []
    for i, (hour, total, r) in enumerate(points):
        x = i * step
        bh = (bottom - top) * total / peak
        tip = f"{hour:%H:00} UTC: {total:,} messages, delivered {ratio(r)}"
        bars.append(f'<rect x="{x + 1:.1f}" y="{bottom - bh:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{bh:.1f}" class="vol"><title>{esc(tip)}</title></rect>')
        if r is not None and total:
            line.append((x + step / 2, top + (bottom - top) * (1 - float(r))))
        if i % 6 == 0:
            labels.append(f'<text x="{x + 1:.1f}" y="{h - 6}" class="lbl">{hour:%H}:00</text>')
    poly = ('<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '" class="ratio"/>'
            if len(line) > 1 else "")
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="dot"/>' for x, y in line)
    return (f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}" class="chart">'
            f"<title>{esc(title)}</title>"
            f'<line x1="0" y1="{top}" x2="{w}" y2="{top}" class="grid"/>'
            f'<line x1="0" y1="{(top + bottom) / 2}" x2="{w}" y2="{(top + bottom) / 2}" class="grid"/>'
            f'<line x1="0" y1="{bottom}" x2="{w}" y2="{bottom}" class="grid"/>'
            f'{"".join(bars)}{poly}{dots}{"".join(labels)}'
            f'<text x="0" y="11" class="lbl">bars: messages per hour (top: {peak:,}) · '
            f'<tspan class="lt">line: delivered, 0–100%</tspan></text>'
            "</svg>")


def _polling(v: VendorStatus, now: datetime) -> str:
    """The circuit, since when, who polls, the last success; the last error with its age, grey
    once a success came after it."""
    if v.circuit is None:
        line = f"circuit {_circuit(None)}"
    else:
        since = f" for {seconds(age_s(v.circuit_since, now))}" if v.circuit_since else ""
        replicas = f" · polled by {v.polling_replicas} replica{'s' if v.polling_replicas != 1 else ''}"
        line = (f"circuit {_circuit(v.circuit)}{since}{replicas} · "
                f"last successful poll: {esc(ago(v.last_success_at, now))}")
    if not v.last_error:
        return f'<div class="sub" data-k="polling">{line}</div>'
    when = f", {esc(ago(v.last_error_at, now))}" if v.last_error_at else ""
    if error_is_current(v):
        error = f'<div class="sub err" data-k="poll_error">last poll error{when}: {esc(v.last_error)}</div>'
    else:
        error = (f'<div class="sub old" data-k="poll_error">last poll error{when}, before the last '
                 f'success: {esc(v.last_error)}</div>')
    return f'<div class="sub" data-k="polling">{line}</div>{error}'


def _unmapped(v: VendorStatus, now: datetime) -> str:
    listed = []
    for c in v.unmapped_codes[:20]:
        if c.reports is None:
            listed.append(f"<code>{esc(c.code)}</code>")
            continue
        capped = c.reports >= v.unmapped_count_cap
        # counted up to the cap: the latest time among the reports read is a lower bound then
        seen = ("last seen " + ("at most " if capped else "") + esc(ago(c.last_seen_at, now)))
        listed.append(f"<li><code>{esc(c.code)}</code> ×{count(c.reports, v.unmapped_count_cap)}, {seen}</li>")
    if not listed:
        return '<div class="sub">unmapped codes: none</div>'
    more = len(v.unmapped_codes) - 20
    tail = f"<li>and {more:,} more</li>" if more > 0 else ""
    return f'<div class="sub">unmapped codes:</div><ul class="codes sub">{"".join(listed)}{tail}</ul>'


def _refusals(v: VendorStatus, now: datetime) -> str:
    if not v.refused or not v.last_refusal:
        return ""
    return (f'<div class="sub err wrap" data-k="last_refusal">last refused row '
            f"({esc(ago(v.last_refusal_at, now))}): {esc(v.last_refusal)}</div>")


def _vendor_card(v: VendorStatus, d: StatusData) -> str:
    now = d.now
    alerts = " ".join(badge(text, level) for text, level in vendor_alerts(v, now, d.hour_from))
    since_hour = f"since {hour_label(d.hour_from, now)}" if d.hour_from else "last hour"
    since_day = f"since {hour_label(d.day_from, now)}" if d.day_from else "last day"
    return f"""
<section class="card vendor" id="vendor-{esc(v.vendor)}">
  <h2>{esc(v.vendor)} {alerts}</h2>
  <div class="kpis">
    {kpi("in flight", "in_flight", count(v.in_flight, v.count_cap))}
    {kpi(f"delivered, {since_hour}", "ratio_hour", ratio((v.hour or {}).get("delivered_ratio")))}
    {kpi(f"delivered, {since_day}", "ratio_day", ratio((v.day or {}).get("delivered_ratio")))}
    {kpi("stuck", "stuck", count(v.stuck, v.stuck_cap))}
    {kpi(f"refused at intake, {since_hour}", "refused", count(v.refused, v.refused_cap),
         "bad-t" if v.refused else "")}
  </div>
  {_refusals(v, now)}
  <table><tr><th></th><th class="n">messages</th><th class="n">delivered</th><th class="n">latency p50 / p90</th></tr>
    <tr><th>{esc(since_hour)}</th>{_figures(v.hour)}</tr>
    <tr><th>{esc(since_day)}</th>{_figures(v.day)}</tr></table>
  {_polling(v, now)}
  {_unmapped(v, now)}
  {chart(v.chart, f"{v.vendor}: messages per hour and delivered ratio, last 24 h")}
</section>"""


STYLE = """
:root{color-scheme:dark;--bg:#0f1419;--card:#1a2129;--fg:#e6e9ec;--mute:#8b96a3;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--vol:#3b6ea8;--line:#f0c05a}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.4 system-ui,sans-serif}
header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:baseline;padding:12px 16px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:12px 0 4px;color:var(--mute)}
main{display:grid;gap:12px;padding:0 12px 12px;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr))}
.card{background:var(--card);border-radius:8px;padding:12px;overflow-x:auto}.wide{grid-column:1/-1}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(110px,1fr));gap:8px;margin-bottom:8px}
.k{display:block;color:var(--mute);font-size:12px}.v{font-size:24px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{padding:3px 6px;text-align:left;border-bottom:1px solid #2a333d}
.n{text-align:right;font-variant-numeric:tabular-nums}.sub{color:var(--mute);font-size:13px;margin-top:4px}
.b{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:600;vertical-align:middle}
.ok{background:#1f3d2a;color:var(--ok)}.warn{background:#3d3219;color:var(--warn)}.bad{background:#4a1d1d;color:var(--bad)}.mute{background:#2a333d;color:var(--mute)}
code{font-size:12px;background:#2a333d;padding:0 4px;border-radius:4px}
.chart{width:100%;height:auto;margin-top:8px}.vol{fill:var(--vol)}.ratio{fill:none;stroke:var(--line);stroke-width:2}
.dot{fill:var(--line)}.grid{stroke:#2a333d}.lbl{fill:var(--mute);font-size:11px}.lt{fill:var(--line)}
.err,.bad-t{color:var(--bad)}.old{color:var(--mute);opacity:.7}.wrap{overflow-wrap:anywhere;white-space:normal}
ul.codes,ul.problems{margin:2px 0;padding-left:18px}.problems li{overflow-wrap:anywhere}
tr.detail td{color:var(--mute);font-size:13px;padding-top:0}table.sinks{font-size:13px}
"""


def render(d: StatusData, refresh_url: str) -> str:
    vendors = "".join(_vendor_card(v, d) for v in d.vendors)
    # the figures' windows start at a clock hour: "since 13:00" at 14:40 is this hour and the last
    hour_from = f"{d.hour_from:%H}:00" if d.hour_from else "the previous hour's start"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S};url={esc(refresh_url)}">
<title>SMS delivery tracker: status</title><style>{STYLE}</style></head>
<body><header><h1>SMS delivery tracker</h1>
<span class="sub">{d.now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {REFRESH_S} s · by time of submission,
in whole clock hours (UTC): "since {hour_from}" is this hour and the previous one</span></header>
<main>{sections.tracker_card(d)}{vendors}{sections.pipeline(d)}{sections.retention(d)}{sections.routes(d)}</main></body></html>"""
