"""The delivery rollups behind tracker.delivery_by_route, tracker.vendor_comparison and the status
page (sql/009_route_views.sql, docs/views.md).

Writers never touch the rollups: a statement trigger on tracker.messages appends what each
statement changed to tracker.route_deltas. This sweep folds the committed deltas into
tracker.route_days and tracker.vendor_hours and deletes them, in one transaction, on one replica
at a time. The views add the deltas not folded yet, so folding late only makes them a little
slower, never wrong.
"""
from __future__ import annotations

import asyncpg

from tracker.db import queries as q
from tracker.logging import get_logger

log = get_logger("tracker.rollup")

FOLD_EVERY_S = 10.0


async def fold(conn: asyncpg.Connection) -> int:
    """Fold the deltas committed so far; returns how many delta rows were folded."""
    folded = await conn.fetchval(q.FOLD_ROUTE_DELTAS)
    if folded:
        log.debug("route deltas folded", rows=folded)
    return folded
