"""Reading what PostgreSQL did with a statement (tests/integration/test_claim_plan.py,
test_report_plan.py): run it under EXPLAIN ANALYZE inside a transaction that is rolled back."""
from __future__ import annotations

import contextlib

import orjson


@contextlib.asynccontextmanager
async def rolled_back(conn):
    """A transaction that never commits: what the statements in it wrote is undone."""
    tx = conn.transaction()
    await tx.start()
    try:
        yield
    finally:
        await tx.rollback()


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


async def analyzed(conn, sql: str, *args) -> list[dict]:
    """`sql` run under EXPLAIN ANALYZE: every node of its plan, the root first."""
    [explained] = orjson.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args))
    return list(nodes(explained["Plan"]))


def most_rows_read(plan: list[dict], relation: str) -> int:
    """The most rows any node reading `relation` returned."""
    return max(n["Actual Rows"] for n in plan if n.get("Relation Name") == relation)
