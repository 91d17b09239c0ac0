"""deploy/grafana and deploy/prometheus-alerts.yml hold up against the real thing: every PostgreSQL
panel query runs on the real views (a migrated database with the status page's data set), and
every metric a Prometheus panel or alert rule names is exposed by the daemon's GET /metrics, and
the README's read-only role can read the views, those a later migration adds too."""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.status_support import seed
from tracker.config_types import Config
from tracker.http import ops

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "sms-tracker.json").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
METRIC = re.compile(r"\btracker_[a-z0-9_]+\b")


def panels(items=DASHBOARD["panels"]):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def targets(kind: str):
    for p in panels():
        for t in p.get("targets", []):
            if t["datasource"]["uid"] == "${" + kind + "}":
                yield p["title"], t


def grafana_macros(sql: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL data source makes of its macros before sending the query."""
    frm, to = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {frm} AND {to}", sql)
    return sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)


def test_data_sources_come_from_variables_never_import_placeholders():
    text = json.dumps(DASHBOARD)
    assert "${DS_" not in text and "__inputs" not in DASHBOARD
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["prometheus"]["type"] == variables["postgres"]["type"] == "datasource"
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/sms-tracker.yaml").read_text())
    types = {d["type"] for d in provisioned["datasources"]}
    assert {variables["prometheus"]["query"], variables["postgres"]["query"]} == types
    for p in panels():
        if p["type"] != "row":
            assert p["datasource"]["uid"] in ("${prometheus}", "${postgres}"), p["title"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sms-tracker.yaml").read_text())
    assert provider["providers"][0]["type"] == "file" and provider["providers"][0]["options"]["path"]


async def test_every_postgresql_panel_query_runs_on_the_views(pool):
    async with pool.acquire() as conn:
        await seed(conn)
    end = datetime.now(timezone.utc)
    queries = list(targets("postgres"))
    assert len(queries) >= 8
    returned = {}
    async with pool.acquire() as conn:
        for title, t in queries:
            sql = grafana_macros(t["rawSql"], end - timedelta(hours=24), end)
            assert "$" not in sql, (title, sql)
            async with conn.transaction(readonly=True):  # Grafana's role may only read
                rows = await conn.fetch(sql)
            returned[title] = rows
            if t["format"] == "time_series":
                assert all("time" in r.keys() and "metric" in r.keys() for r in rows), title
    assert returned["Delivered ratio per hour of submission, by vendor"]
    assert {r["vendor"] for r in returned["Stuck messages, by vendor"]} == {"skycore"}
    assert any(r["vendor"] == "sparksender" and r["country"] == "US"
               for r in returned["Delivery by route and day"])
    assert returned["Vendors side by side per country (since the dashboard's start day)"]


async def test_every_metric_named_by_a_panel_or_an_alert_is_exposed():
    named = {m for _, t in targets("prometheus") for m in METRIC.findall(t["expr"])}
    rules = [r for g in ALERTS["groups"] for r in g["rules"]]
    named |= {m for r in rules for m in METRIC.findall(r["expr"])}
    assert len(named) >= 15 and all(r["annotations"]["summary"] for r in rules)
    app = web.Application()
    ops.add_routes(app, SimpleNamespace(config=Config()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            text = await r.text()
    finally:
        await runner.cleanup()
    exposed = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M):
        exposed.add(name)
        if kind == "histogram":
            exposed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert named <= exposed, sorted(named - exposed)


async def test_the_readonly_roles_grants_reach_views_a_later_migration_adds(pool):
    """deploy/grafana/README.md's SQL, run as the README says (FOR ROLE: the role that runs the
    migrations, here the test's), lets the Grafana role read today's views and one a later
    migration adds: GRANT ... ON ALL TABLES alone reached only those that existed."""
    readme = (DEPLOY / "grafana" / "README.md").read_text()
    (block,) = re.findall(r"```sql\n(.*?)```", readme, re.S)
    assert "ALTER DEFAULT PRIVILEGES FOR ROLE tracker IN SCHEMA tracker" in block
    role = "grafana_reader_" + uuid.uuid4().hex[:8]
    async with pool.acquire() as conn:
        me = await conn.fetchval("SELECT current_user")
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.skip("the test database's role may not create roles and SET ROLE to them")
        sql = (block.replace("grafana_reader", role).replace("FOR ROLE tracker", f'FOR ROLE "{me}"')
               .replace("PASSWORD '...'", "PASSWORD NULL"))
        statements = [s for s in (part.strip() for part in re.sub(r"--[^\n]*", "", sql).split(";")) if s]
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("CREATE VIEW tracker.added_by_a_later_migration AS SELECT 1 AS one")
            async with conn.transaction():
                await conn.execute(f'SET LOCAL ROLE "{role}"')
                assert await conn.fetchval("SELECT one FROM tracker.added_by_a_later_migration") == 1
                await conn.fetch("SELECT * FROM tracker.vendor_health")
        finally:
            await conn.execute(f'DROP OWNED BY "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')


async def test_days_are_utc_days_whatever_the_sessions_time_zone(pool):
    """`day` is a UTC day; Grafana sets no session TimeZone, and a database's default is the
    host's zone at initdb. Cast in the session's zone, the panel's range began the day before
    west of UTC and left out the UTC day's rows for its first hours."""
    async with pool.acquire() as conn:
        await seed(conn)
        day = await conn.fetchval("SELECT max(day) FROM tracker.delivery_by_route")
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    [(title, t)] = [(n, t) for n, t in targets("postgres") if n == "Delivery by route and day"]
    sql = grafana_macros(t["rawSql"], start, start + timedelta(hours=3))
    for zone in ("UTC", "Pacific/Pago_Pago", "Pacific/Kiritimati"):  # -11 and +14
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL TimeZone = '{zone}'")
            assert {r["day"] for r in await conn.fetch(sql)} == {day}, zone
