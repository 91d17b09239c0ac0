"""The Sparrow sandbox's settings (tracker.sandbox.sparrow), given as the tracker's vendor config
keys (`Sandbox(credentials={"sparrow": {...}})`, so that `vendor_config` hands them on):

- the report call it serves (the page contradicts itself): `report_method` (GET | POST, every
  report call), `report_prefix` (compose | campaign, every report call) and `report_path`
  (delivery | delivered); the first of each is the default, as the adapter's;
- `naive_time_zone`: the zone of the times it writes without an offset (DLR and report `ts`),
  `+HH:MM` / `-HH:MM` or `UTC`; by default Nepal time (+05:45), the adapter's default reading.
  The times it writes with an offset (`expires_on`, `created_at`) are in the same zone.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from aiohttp import web

REPORT_CHOICES = {"report_method": ("GET", "POST"), "report_prefix": ("compose", "campaign"),
                  "report_path": ("delivery", "delivered")}  # first: the default
REPORT_METHODS, REPORT_PREFIXES, REPORT_PATHS = REPORT_CHOICES.values()
NPT = timezone(timedelta(hours=5, minutes=45))
DEFAULT_NAIVE_TIME_ZONE = "+05:45"
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")


def report_variant(creds: Mapping[str, Any]) -> tuple[str, str, str]:
    """(method, prefix, delivered/seen path) that `creds` name; ValueError for another value."""
    got = [(creds.get(k) or allowed[0]).strip().strip("/") for k, allowed in REPORT_CHOICES.items()]
    variant = got[0].upper(), got[1].lower(), got[2].lower()
    if not all(v in allowed for v, allowed in zip(variant, REPORT_CHOICES.values())):
        raise ValueError("sparrow sandbox: " + ", ".join(f"{k} {'|'.join(v)}" for k, v in REPORT_CHOICES.items()))
    return variant


def naive_zone(creds: Mapping[str, Any]) -> timezone:
    """The zone `creds` name (naive_time_zone); ValueError for anything but UTC or +HH:MM."""
    text = (creds.get("naive_time_zone") or DEFAULT_NAIVE_TIME_ZONE).strip()
    if text.upper() == "UTC":
        return timezone.utc
    m = _OFFSET.fullmatch(text)
    if m is None or int(m[3]) >= 60 or int(m[2]) > 14:
        raise ValueError("sparrow sandbox: naive_time_zone UTC or +HH:MM / -HH:MM")
    offset = timedelta(hours=int(m[2]), minutes=int(m[3]))
    return NPT if text == DEFAULT_NAIVE_TIME_ZONE else timezone(-offset if m[1] == "-" else offset)


def naive(dt: datetime, zone: timezone) -> str:
    """A time as Sparrow writes `ts`: in `zone`, without the offset."""
    return dt.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def changed(creds: Mapping[str, Any], **values: str | None) -> dict[str, Any]:
    """`creds` with `values` (None: that setting back to its default); ValueError, before
    anything changes, for a value not served."""
    out = {k: v for k, v in creds.items() if k not in values} | {k: v for k, v in values.items() if v}
    report_variant(out)
    naive_zone(out)
    return out


def unrouted_answer(status: int, allow: str) -> web.Response:
    """A web server router's answer to a report variant not served: 404 or 405, plain text."""
    text = {404: "404: Not Found", 405: "405: Method Not Allowed"}[status]
    return web.Response(text=text, status=status, content_type="text/plain",
                        headers={"Allow": allow} if status == 405 else None)
