"""How long each retention kind keeps its rows (tracker.retention.limit_days): every kind resolves
to a [retention] key (the daemon reads them all at start: a kind with neither a key nor one it
follows failed there), unreferenced submission rows follow final_messages_days, and the poll
counters are folded whatever the keys say."""
from __future__ import annotations

import dataclasses

from tracker import retention
from tracker.config_types import RetentionConfig
from tracker.db import queries as q


def test_every_kind_has_a_limit_a_batch_function_and_the_fold_too():
    defaults = RetentionConfig()
    for kind in retention.KINDS:
        assert retention.limit_days(defaults, kind) >= 0
        assert kind in q.RETENTION_BATCH
    assert retention.POLL_STATS in q.RETENTION_BATCH and retention.POLL_STATS not in retention.KINDS


def test_unreferenced_rows_are_kept_as_long_as_messages_and_the_fold_always_runs():
    kept = dataclasses.replace(RetentionConfig(), final_messages_days=0, refused_rows_days=5)
    assert retention.limit_days(RetentionConfig(), "unreferenced_rows") == 90
    assert retention.limit_days(kept, "unreferenced_rows") == 0
    assert retention.limit_days(kept, "refused_rows") == 5
    assert retention.limit_days(kept, retention.POLL_STATS) == retention.POLL_STATS_FOLD_DAYS > 0
