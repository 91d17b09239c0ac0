"""The status page's cards other than the vendors': the tracker itself, intake and postbacks with
the event consumers and sinks, retention, top routes. Pure; every text through `esc`."""
from __future__ import annotations

from typing import Any, Mapping

from tracker.http.status_data import StatusData, age_level
from tracker.http.status_format import ago, badge, cell, count, esc, hour_label, kpi, ratio, seconds


def tracker_card(d: StatusData) -> str:
    t = d.tracker
    if t is None:  # not gathered: no word on readiness rather than a "ready" nobody checked
        return ""
    if t.problems:
        state = badge("not ready", "bad")
        problems = "".join(f"<li><b>{esc(p.component)}</b>: {esc(p.reason)}</li>" for p in t.problems)
        ready = f'<ul class="problems" data-k="problems">{problems}</ul>'
    else:
        state = badge("ready", "ok")
        ready = '<p class="sub">ready: /readyz answers 200</p>'
    failed = "".join(
        f'<tr><td>{esc(c.name)}</td><td class="n">{c.failures:,}</td>'
        f'<td>{badge(f"failing, {c.in_a_row} in a row", "bad") if c.in_a_row else "recovered"}</td></tr>'
        f'<tr class="detail"><td colspan="3"><div class="wrap">last error: {esc(c.last_error)}</div></td></tr>'
        for c in t.components
    ) or '<tr><td colspan="3" class="sub">none</td></tr>'
    replicas = "".join(
        f'<tr><td>{esc(r["replica"])}</td><td>{esc(", ".join(r["vendors"]))}</td>'
        f'<td>{esc(ago(r["reported_at"], d.now))}</td></tr>' for r in t.replicas
    ) or '<tr><td colspan="3" class="sub">none: no replica has reported polling in the last 2 minutes</td></tr>'
    return f"""
<section class="card" id="tracker">
  <h2>Tracker {state}</h2>
  {ready}
  <h3>Components that failed since this daemon started</h3>
  <table><tr><th>component</th><th class="n">failures</th><th>now</th></tr>{failed}</table>
  <h3>Replicas polling (reported in the last 2 minutes)</h3>
  <table><tr><th>replica</th><th>vendors</th><th>last report</th></tr>{replicas}</table>
</section>"""


def pipeline(d: StatusData) -> str:
    consumers = "".join(
        f'<tr><td>{esc(c["consumer"])}</td><td class="n">{int(c["events"]):,}</td>'
        f'<td class="n">{seconds(c["age_s"]) if c["age_s"] else "–"}</td></tr>' for c in d.consumers
    ) or '<tr><td colspan="3" class="sub">no consumer has acknowledged an event yet</td></tr>'
    intake = badge(seconds(d.intake_oldest_s), age_level(d.intake_oldest_s, d.stall_s))
    postbacks = badge(seconds(d.postbacks_oldest_s), age_level(d.postbacks_oldest_s, d.postbacks_stall_s))
    return f"""
<section class="card" id="pipeline">
  <h2>Intake and postbacks</h2>
  <div class="kpis">
    {kpi("submission rows waiting", "intake_waiting", count(d.intake_waiting, d.count_cap))}
    {kpi("oldest waiting", "intake_oldest", intake)}
    {kpi("postbacks waiting to be applied", "postbacks_waiting", count(d.postbacks_waiting, d.count_cap))}
    {kpi("oldest waiting", "postbacks_oldest", postbacks)}
  </div>
  {refused_elsewhere(d)}
  <h3>Consumers other than sinks (events not acknowledged)</h3>
  <table class="consumers"><tr><th>consumer</th><th class="n">behind</th><th class="n">oldest</th></tr>
  {consumers}</table>
  {sinks(d)}
</section>"""


def refused_elsewhere(d: StatusData) -> str:
    """Rows refused for a vendor no card shows (a misspelt name: `SparkSender`): each card's
    "refused at intake" would miss them, and a whole feed refused would look idle."""
    since = f"since {hour_label(d.hour_from, d.now)}" if d.hour_from else "in the last hour"
    return "".join(
        f'<div class="sub err wrap" data-k="refused_elsewhere">'
        f'{count(r["refused"], r["refused"] if r["capped"] else r["refused"] + 1)} submission '
        f'rows refused {since} for vendor {esc(repr(r["vendor"]))}, not one of ours: '
        f'{esc(r["last_error"] or "")}</div>' for r in d.refused_elsewhere)


def sinks(d: StatusData) -> str:
    """A row per sink, few columns so that a phone's card holds them; below it, across the table
    and wrapped, what needs words: the oldest undelivered event's age, why it is disabled or
    paused, its last error (a long error is read there, not scrolled to)."""
    if d.sinks is None:
        return f'<h3>Sinks</h3><p class="sub">{esc(d.sinks_note or "no sinks")}</p>'
    if not d.sinks:
        return '<h3>Sinks</h3><p class="sub">no sink configured</p>'
    rows = "".join(_sink(r, d) for r in d.sinks)
    return ('<h3>Sinks</h3><table class="sinks"><tr><th>sink</th><th>state</th><th class="n">events behind</th>'
            f'<th class="n">dead letters</th><th>last success</th></tr>{rows}</table>')


def _sink(r: Mapping[str, Any], d: StatusData) -> str:
    dead = r.get("dead_letters")
    if r.get("disabled"):
        state = badge("disabled", "bad")
    elif r.get("paused_until"):
        state = badge(f"paused until {r['paused_until']:%H:%M:%S}", "warn")
    else:
        state = "enabled" if "disabled" in r else "–"
    kind = f'<div class="sub">{esc(r["kind"])}</div>' if r.get("kind") else ""
    notes = []
    if r.get("oldest_undelivered_age") is not None:
        notes.append(f"oldest undelivered event: {cell(r['oldest_undelivered_age'], d.now)}")
    if r.get("disabled_reason"):
        notes.append(f"disabled: {esc(r['disabled_reason'])}")
    if r.get("last_error"):
        when = f" ({esc(ago(r['last_error_at'], d.now))})" if r.get("last_error_at") else ""
        notes.append(f"last error{when}: {esc(r['last_error'])}")
    detail = "".join(f'<div class="wrap">{n}</div>' for n in notes)
    return (f'<tr><td>{esc(r["sink"])}{kind}</td><td>{state}</td>'
            f'<td class="n">{cell(r.get("events_behind"), d.now)}</td>'
            f'<td class="n">{badge(f"{dead:,}", "bad") if dead else cell(dead, d.now)}</td>'
            f'<td>{esc(ago(r["last_success_at"], d.now)) if "last_success_at" in r else "–"}</td></tr>'
            + (f'<tr class="detail"><td colspan="5">{detail}</td></tr>' if detail else ""))


def routes(d: StatusData) -> str:
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


def retention(d: StatusData) -> str:
    rows = "".join(
        f'<tr><td>{esc(r["kind"])}</td><td>{esc(ago(r["finished_at"], d.now))}</td>'
        f'<td class="n">{int(r["removed"]):,}</td><td>{esc(r["error"] or "")}</td></tr>' for r in d.retention
    ) or '<tr><td colspan="4" class="sub">nothing removed yet</td></tr>'
    return f"""
<section class="card">
  <h2>Retention</h2>
  <table><tr><th>kind</th><th>last removal</th><th class="n">rows</th><th>error</th></tr>{rows}</table>
</section>"""
