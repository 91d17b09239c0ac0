"""Postback load from `wrk` (a C load generator, Debian package `wrk`), pinned to its own core,
against the tracker's postback route or the bare handler (bench/_bare.py). A small Lua script
posts Skycore v2 JSON bodies with varying tracking ids (bench00000000 ... of the messages the
bench made) and prints wrk's own latency percentiles as one JSON line at the end."""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import orjson

WRK_CORE = 1  # wrk runs here (taskset -c 1); the servers and PostgreSQL run where they like

# One Skycore v2 postback; %d is the message number (tracking id and recipient vary with it).
# Its event time is the bench's start, the same for every postback, as before session 24 (a fixed
# 2024-05-01, which became a time no report can mean, over 400 days old: the time received then
# stood for it, a different one per postback, and PostgreSQL's share rose by 10-15 us a postback:
# docs/performance.md, "Session 24").
STARTED = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
BODY = ('{"origin":"SMS_MT","code":"N202","sent-as":"SMS","status":"Delivered","from":"00000",'
        '"to":"1555%07d","tracking-id":"bench%08d","operator-id":"0001470",'
        '"operator-name":"AT&T","timestamp":"' + STARTED + '"}')

LUA = r"""
local first, count = %(first)d, %(count)d
local i = 0
local headers = {["Content-Type"] = "application/json"}
local template = '%(body)s'
request = function()
  local n = first + (i %% count)
  i = i + 1
  return wrk.format("POST", nil, headers, string.format(template, n %% 10000000, n))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"p999_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""

# wrk2-style constant rate is not in Debian's wrk: rate-limited load comes from the Python
# client in bench/events.py instead.


class WrkMissing(RuntimeError):
    pass


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run "
                         "this bench again")
    return path


def script(first: int, count: int) -> Path:
    fd, name = tempfile.mkstemp(prefix="tracker-wrk-", suffix=".lua")
    os.close(fd)
    path = Path(name)
    path.write_text(LUA % {"first": first, "count": count, "body": BODY.replace("%d", "%d")})
    return path


def run(url: str, seconds: float, connections: int, first: int, count: int) -> dict:
    """wrk for `seconds` with `connections` connections, one thread, on core WRK_CORE.
    Returns rate (200s per second), latencies (ms) and the error counts."""
    lua = script(first, count)
    try:
        cmd = [wrk_path(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(lua), url]
        if shutil.which("taskset") and (os.cpu_count() or 1) > WRK_CORE:
            cmd = ["taskset", "-c", str(WRK_CORE), *cmd]
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    finally:
        lua.unlink(missing_ok=True)
    m = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = orjson.loads(m.group(1))
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non2xx"]
    return {"requests": r["requests"], "ok": ok, "errors": errors, "non2xx": r["non2xx"],
            "seconds": r["duration_us"] / 1e6, "rate": ok / (r["duration_us"] / 1e6),
            "p50": r["p50_us"] / 1000, "p90": r["p90_us"] / 1000, "p99": r["p99_us"] / 1000,
            "p999": r["p999_us"] / 1000, "max": r["max_us"] / 1000,
            "wrk_cpu_us": wrk_cpu / max(r["requests"], 1) * 1e6, "wrk_cores": wrk_cpu / (r["duration_us"] / 1e6)}
