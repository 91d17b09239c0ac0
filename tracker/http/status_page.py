"""The /status page as HTML: pure (data in, text out), so that it is tested without a server.

One page, no script: a meta refresh reloads it; the charts are inline SVG; the layout is a CSS
grid that is one column on a phone and several on a wall screen. Every text shown comes through
`esc` (vendor codes, errors and consumer names are untrusted).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

REFRESH_S = 15
CAP_SHOWN = "≥"  # before a count that reached its cap (counting stops there: bounded work)


@dataclass
class VendorStatus:
    vendor: str
    enabled: bool = True  # False: disabled in the configuration (or not in it): nothing polls it
    in_flight: int = 0
    stuck: int = 0
    count_cap: int = 100_000
    stuck_cap: int = 10_000
    hour: Mapping[str, Any] | None = None  # tracker.vendor_figures_since: total, ratio, p50_s, p90_s
    day: Mapping[str, Any] | None = None
    circuit: str | None = None  # closed | half_open | open | None (not polled)
    last_success_at: datetime | None = None
    last_error: str | None = None
    unmapped_codes: list[str] = field(default_factory=list)
    chart: list[tuple[datetime, int, float | None]] = field(default_factory=list)  # hour, total, ratio


@dataclass
class StatusData:
    now: datetime
    vendors: list[VendorStatus]
    intake_waiting: int = 0
    intake_oldest_s: float | None = None
    postbacks_waiting: int = 0
    postbacks_oldest_s: float | None = None
    consumers: list[Mapping[str, Any]] = field(default_factory=list)  # consumer, events, age_s
    sinks: list[Mapping[str, Any]] | None = None  # None: the sinks' view does not exist (yet)
    sinks_note: str | None = None
    routes: list[Mapping[str, Any]] = field(default_factory=list)  # top routes by volume
    retention: list[Mapping[str, Any]] = field(default_factory=list)  # last run per kind
    count_cap: int = 100_000
    stall_s: float = 60.0


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def count(n: int | None, cap: int) -> str:
    if n is None:
        return "–"
    return f"{CAP_SHOWN}{n:,}" if n >= cap else f"{n:,}"


def ratio(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f}%"


def seconds(value: Any) -> str:
    if value is None:
        return "–"
    s = float(value)
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def ago(at: datetime | None, now: datetime) -> str:
    return "never" if at is None else f"{seconds(max(0.0, (now - at).total_seconds()))} ago"


def _badge(text: str, level: str) -> str:
    return f'<span class="b {level}">{esc(text)}</span>'


def _circuit(state: str | None) -> str:
    if state is None:
        return _badge("not polled", "mute")
    return _badge(state.replace("_", "-"), {"closed": "ok", "half_open": "warn"}.get(state, "bad"))


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


def _vendor_card(v: VendorStatus, now: datetime) -> str:
    alerts = [] if v.enabled else [_badge("disabled", "mute")]
    if v.circuit == "open":
        alerts.append(_badge("circuit open", "bad"))
    if v.stuck:
        alerts.append(_badge(f"{count(v.stuck, v.stuck_cap)} stuck", "warn"))
    if v.unmapped_codes:
        alerts.append(_badge(f"{len(v.unmapped_codes)} unmapped codes", "warn"))
    codes = ", ".join(f"<code>{esc(c)}</code>" for c in v.unmapped_codes[:20]) or "none"
    error = f'<div class="sub">last poll error: {esc(v.last_error)}</div>' if v.last_error else ""
    return f"""
<section class="card vendor" id="vendor-{esc(v.vendor)}">
  <h2>{esc(v.vendor)} {" ".join(alerts)}</h2>
  <div class="kpis">
    <div><span class="k">in flight</span><span class="v" data-k="in_flight">{count(v.in_flight, v.count_cap)}</span></div>
    <div><span class="k">delivered, last hour</span><span class="v" data-k="ratio_hour">{ratio((v.hour or {}).get("delivered_ratio"))}</span></div>
    <div><span class="k">delivered, last day</span><span class="v" data-k="ratio_day">{ratio((v.day or {}).get("delivered_ratio"))}</span></div>
    <div><span class="k">stuck</span><span class="v" data-k="stuck">{count(v.stuck, v.stuck_cap)}</span></div>
  </div>
  <table><tr><th></th><th class="n">messages</th><th class="n">delivered</th><th class="n">latency p50 / p90</th></tr>
    <tr><th>last hour</th>{_figures(v.hour)}</tr>
    <tr><th>last day</th>{_figures(v.day)}</tr></table>
  <div class="sub">circuit {_circuit(v.circuit)} · last successful poll: {esc(ago(v.last_success_at, now)) if v.circuit else "–"}</div>
  {error}
  <div class="sub">unmapped codes: {codes}</div>
  {chart(v.chart, f"{v.vendor}: messages per hour and delivered ratio, last 24 h")}
</section>"""


def _age_level(age_s: float | None, stall_s: float) -> str:
    return "ok" if not age_s else ("bad" if age_s > stall_s else "warn")


def _pipeline(d: StatusData) -> str:
    consumers = "".join(
        f'<tr><td>{esc(c["consumer"])}</td><td class="n">{int(c["events"]):,}</td>'
        f'<td class="n">{seconds(c["age_s"]) if c["age_s"] else "–"}</td></tr>' for c in d.consumers
    ) or '<tr><td colspan="3" class="sub">no consumer has acknowledged an event yet</td></tr>'
    return f"""
<section class="card">
  <h2>Intake and postbacks</h2>
  <div class="kpis">
    <div><span class="k">submission rows waiting</span><span class="v" data-k="intake_waiting">{count(d.intake_waiting, d.count_cap)}</span></div>
    <div><span class="k">oldest waiting</span><span class="v">{_badge(seconds(d.intake_oldest_s), _age_level(d.intake_oldest_s, d.stall_s))}</span></div>
    <div><span class="k">postbacks waiting to be applied</span><span class="v" data-k="postbacks_waiting">{count(d.postbacks_waiting, d.count_cap)}</span></div>
    <div><span class="k">oldest waiting</span><span class="v">{_badge(seconds(d.postbacks_oldest_s), _age_level(d.postbacks_oldest_s, d.stall_s))}</span></div>
  </div>
  <h3>Consumers (events not acknowledged)</h3>
  <table><tr><th>consumer</th><th class="n">behind</th><th class="n">oldest</th></tr>{consumers}</table>
  {_sinks(d)}
</section>"""


SINK_COLUMNS = ("sink", "kind", "events_behind", "dead_letters", "oldest_undelivered_age", "disabled",
                "last_error")


def _sinks(d: StatusData) -> str:
    if d.sinks is None:
        return f'<h3>Sinks</h3><p class="sub">{esc(d.sinks_note or "no sinks")}</p>'
    if not d.sinks:
        return '<h3>Sinks</h3><p class="sub">no sink configured</p>'
    cols = [c for c in SINK_COLUMNS if c in d.sinks[0]] or list(d.sinks[0].keys())
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in cols)
    rows = "".join("<tr>" + "".join(f"<td>{esc(_cell(r[c]))}</td>" for c in cols) + "</tr>" for r in d.sinks)
    return f"<h3>Sinks</h3><table><tr>{head}</tr>{rows}</table>"


def _cell(value: Any) -> str:
    if hasattr(value, "total_seconds"):
        return seconds(value.total_seconds())
    return "–" if value is None else str(value)


def _routes(d: StatusData) -> str:
    rows = "".join(
        f'<tr><td>{esc(r["vendor"])}</td><td>{esc(r["country"] or "?")}</td><td>{esc(r["operator"] or "–")}</td>'
        f'<td class="n">{int(r["total"]):,}</td><td class="n">{ratio(r["delivered_ratio"])}</td>'
        f'<td class="n">{seconds(r["p50_s"])}</td></tr>' for r in d.routes
    ) or '<tr><td colspan="6" class="sub">no messages since yesterday</td></tr>'
    return f"""
<section class="card wide">
  <h2>Top routes, yesterday and today (UTC)</h2>
  <table><tr><th>vendor</th><th>country</th><th>operator</th><th class="n">messages</th>
  <th class="n">delivered</th><th class="n">p50</th></tr>{rows}</table>
</section>"""


def _retention(d: StatusData) -> str:
    rows = "".join(
        f'<tr><td>{esc(r["kind"])}</td><td>{esc(ago(r["finished_at"], d.now))}</td>'
        f'<td class="n">{int(r["removed"]):,}</td><td>{esc(r["error"] or "")}</td></tr>' for r in d.retention
    ) or '<tr><td colspan="4" class="sub">nothing removed yet</td></tr>'
    return f"""
<section class="card">
  <h2>Retention</h2>
  <table><tr><th>kind</th><th>last removal</th><th class="n">rows</th><th>error</th></tr>{rows}</table>
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
"""


def render(d: StatusData, refresh_url: str) -> str:
    vendors = "".join(_vendor_card(v, d.now) for v in d.vendors)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S};url={esc(refresh_url)}">
<title>SMS delivery tracker: status</title><style>{STYLE}</style></head>
<body><header><h1>SMS delivery tracker</h1>
<span class="sub">{d.now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {REFRESH_S} s · by time of submission;
"last hour" counts from {d.now - timedelta(hours=1):%H}:00 UTC, "last day" from {d.now - timedelta(days=1):%H}:00 yesterday</span></header>
<main>{vendors}{_pipeline(d)}{_retention(d)}{_routes(d)}</main></body></html>"""
