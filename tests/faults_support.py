"""PostgreSQL refusing a statement for what a row holds, made to happen in a test's database: a
trigger that raises an error of a given SQLSTATE when a condition on the row holds (a real
refusal, through the real statement, without data that takes minutes to build)."""
from __future__ import annotations


def refusing(table: str, when: str, errcode: str, message: str, *, name: str = "test_refuse",
             events: str = "INSERT") -> tuple[str, str]:
    """(SQL that makes tracker.<table> refuse a row where `when` holds, SQL that stops it)."""
    make = f"""
CREATE FUNCTION tracker.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {when} THEN
        RAISE EXCEPTION '{message}' USING ERRCODE = '{errcode}';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE {events} ON tracker.{table}
    FOR EACH ROW EXECUTE FUNCTION tracker.{name}();
"""
    return make, f"DROP TRIGGER {name} ON tracker.{table}; DROP FUNCTION tracker.{name}()"
