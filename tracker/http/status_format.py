"""How the status page writes figures, times and badges (tracker.http.status_page). Pure.

Every text goes out through `esc`: what the page shows may come from vendors, senders and
consumers (codes, errors, names)."""
from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

CAP_SHOWN = "≥"  # before a count that reached its cap (counting stops there: bounded work)


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


def age_s(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else max(0.0, (now - at).total_seconds())


def ago(at: datetime | None, now: datetime) -> str:
    return "never" if at is None else f"{seconds(age_s(at, now))} ago"


def hour_label(at: datetime, now: datetime) -> str:
    """'13:00', or '13:00 yesterday': where a window truncated to the hour starts (UTC)."""
    return f"{at:%H}:00" + (" yesterday" if at.date() < now.date() else "")


def badge(text: str, level: str) -> str:
    return f'<span class="b {level}">{esc(text)}</span>'


def kpi(label: str, key: str, value_html: str, level: str = "") -> str:
    """One figure of a card's row of figures; `key` names it for tests (data-k)."""
    return (f'<div><span class="k">{esc(label)}</span>'
            f'<span class="v{" " + level if level else ""}" data-k="{key}">{value_html}</span></div>')


def cell(value: Any, now: datetime) -> str:
    """A value of a view's row as words (escaped): yes/no, thousands separated, times as ages."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, timedelta):
        return seconds(value.total_seconds())
    if isinstance(value, datetime):
        return esc(ago(value, now))
    return "–" if value is None else esc(value)
