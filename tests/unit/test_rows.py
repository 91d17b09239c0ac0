"""Row layouts between Python and SQL (tracker.db.rows) match the statements that unpack them,
and one statement writes message states for every source."""
from __future__ import annotations

import re
from pathlib import Path

from tracker.db import queries as q
from tracker.db.rows import MessageWrite, TransitionRow, message_write

COLUMN = re.compile(r"\(?r->>(\d+)\)?(?:::[\w.]+)?\s+AS\s+(\w+)")


def columns(sql: str) -> list[tuple[int, str]]:
    """(position, name) of every `r->>N AS name` in a statement, in order."""
    return [(int(n), name) for n, name in COLUMN.findall(sql)]


def test_the_statements_unpack_the_rows_in_their_order():
    assert columns(q.INSERT_TRANSITIONS) == list(enumerate(TransitionRow._fields))
    # WRITE_MESSAGES: the transitions ($3) first, then the messages ($1)
    assert columns(q.WRITE_MESSAGES) == (list(enumerate(TransitionRow._fields))
                                         + list(enumerate(MessageWrite._fields)))


def test_message_write_defaults_change_nothing():
    w = message_write(7, reported_at=None)
    assert w == MessageWrite(7, None, None, None, None, None, None, None, None, None, 0)


def test_one_statement_writes_message_states():
    """Of the daemon's statements, only WRITE_MESSAGES sets a message's state (intake's
    INSERT_NEW_MESSAGES makes new messages in their first state); no other module of the
    package writes messages by itself."""
    setting_state = [name for name, sql in vars(q).items()
                     if isinstance(sql, str) and re.search(r"UPDATE\s+tracker\.messages", sql)
                     and re.search(r"\bstate\s*=", sql.split("WHERE")[0])]
    assert setting_state == ["WRITE_MESSAGES"]
    sql_dir = Path(q.__file__).parent  # tracker/db/queries/
    root = sql_dir.parents[1]
    elsewhere = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if sql_dir not in p.parents and "UPDATE tracker.messages" in p.read_text()]
    assert elsewhere == []


def test_new_messages_are_inserted_in_the_row_type_s_order():
    """INSERT_NEW_MESSAGES takes its rows by position (r->>0 ... r->>18) into the columns it
    lists after the id reserved for each: the list is NewMessageRow's fields, one position each."""
    from tracker.db.rows import NewMessageRow
    sql = q.INSERT_NEW_MESSAGES
    listed = re.search(r"INSERT INTO tracker\.messages \(([^)]*)\)", sql).group(1)
    assert [c.strip() for c in listed.split(",")] == ["id", *NewMessageRow._fields]
    select = sql[sql.index("SELECT"):sql.index("FROM ROWS FROM (jsonb_array_elements")]
    assert [int(n) for n in re.findall(r"r->>(\d+)", select)] == list(range(len(NewMessageRow._fields)))
