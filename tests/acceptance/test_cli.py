"""The `tracker` command as an operator runs it: real processes, real PostgreSQL."""
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import json
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

TRACKER = [sys.executable, "-m", "tracker"]


def env_with(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(extra)
    return env


async def test_migrate_twice_and_concurrently(empty_db_dsn):
    env = env_with(TRACKER_DATABASE__DSN=empty_db_dsn, TRACKER_LOG__FORMAT="json")
    for _ in range(2):
        p = subprocess.run(TRACKER + ["migrate"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    procs = [subprocess.Popen(TRACKER + ["migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM tracker.schema_migrations ORDER BY 1")]
    finally:
        await conn.close()
    from tracker.db.migrate import migrations
    assert versions == [m.version for m in migrations()]


async def test_migrate_from_several_processes_on_an_empty_database(empty_db_dsn):
    env = env_with(TRACKER_DATABASE__DSN=empty_db_dsn)
    procs = [subprocess.Popen(TRACKER + ["migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


async def test_migrate_waiting_for_the_lock_says_who_holds_it_and_never_queues_on_it(db_dsn):
    # A blocking pg_advisory_lock waited without a word, and a `tracker migrate` stopped meanwhile
    # left its server session queued on the lock until the holder let go.
    holder = await asyncpg.connect(db_dsn, server_settings={"application_name": "an operator"})
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtext('tracker.migrate'))")
        proc = subprocess.Popen(TRACKER + ["migrate"], env=env_with(TRACKER_DATABASE__DSN=db_dsn),
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        said = json.loads(proc.stderr.readline())
        assert said["event"].startswith("waiting for the migration lock"), said
        assert said["holder_pid"] == await holder.fetchval("SELECT pg_backend_pid()")
        assert said["holder_application"] == "an operator"
        assert await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                     " AND NOT granted") == 0  # it asks; it does not queue
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        await holder.execute("SELECT pg_advisory_unlock(hashtext('tracker.migrate'))")
        done = subprocess.run(TRACKER + ["migrate"], env=env_with(TRACKER_DATABASE__DSN=db_dsn),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "migrations done" in done.stderr, done.stderr
    finally:
        await holder.close()


async def test_a_database_a_newer_release_migrated_is_said_at_migrate(db_dsn):
    # Gone back to an older release without restoring: nothing said so, and its statements met
    # the newer schema's changes as refusals.
    conn = await asyncpg.connect(db_dsn)
    await conn.execute("INSERT INTO tracker.schema_migrations (version, name) VALUES (999, 'newer')")
    await conn.close()
    done = subprocess.run(TRACKER + ["migrate"], env=env_with(TRACKER_DATABASE__DSN=db_dsn),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said = [json.loads(line) for line in done.stderr.splitlines() if "this release does not have" in line]
    assert [e["versions"] for e in said] == [[999]]


def test_migrate_on_a_database_it_cannot_use_says_so_in_one_line():
    for dsn, said in (("postgresql://u:S3cretPW@127.0.0.1:9/x", "migrate: database unavailable: "),
                      ("postgresql://u:S3cretPW@127.0.0.1:9/x?sslmode=nonsense", "sslmode")):
        p = subprocess.run(TRACKER + ["migrate"], env=env_with(TRACKER_DATABASE__DSN=dsn),
                           capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        assert p.returncode in (1, 2) and said in out, out
        assert "Traceback" not in out and "S3cretPW" not in out


def test_check_config_names_the_key_and_the_reason(tmp_path):
    bad = tmp_path / "tracker.toml"
    bad.write_text('[http]\nlisten = "nowhere"\n[vendors.sparrow]\nrate_limit_per_s = "fast"\n'
                   'api_tokn = "x"\n')
    for args in (["--config", str(bad), "check-config"], ["check-config", "--config", str(bad)]):
        p = subprocess.run(TRACKER + args, env=env_with(), capture_output=True, text=True, timeout=30)
        assert p.returncode == 2
        assert f"{bad}: http.listen:" in p.stdout and "host:port" in p.stdout
        assert "vendors.sparrow.rate_limit_per_s" in p.stdout
        assert "vendors.sparrow.api_tokn" in p.stdout and "api_token" in p.stdout  # did you mean
    good = tmp_path / "good.toml"
    good.write_text('[http]\nlisten = "127.0.0.1:0"\n')
    for args in (["--config", str(good), "check-config"], ["check-config", "--config", str(good)],
                 ["--config", str(bad), "check-config", "--config", str(good)]):  # the later one
        p = subprocess.run(TRACKER + args, env=env_with(), capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "config OK" in p.stdout, args


def test_check_config_refuses_what_run_would_trip_on(tmp_path):
    """As the README's reviewer ran it: a polled vendor without credentials, a DSN password with
    an unencoded "@" or "?", a setting's name with one underscore: exit 2, never the password."""
    state = str(tmp_path / "state")
    for extra, said in (
            ({"TRACKER_VENDORS__SPARKSENDER__BASE_URL": "https://s.example.com"},
             "vendors.sparksender.user_id"),
            ({"TRACKER_DATABASE__DSN": "postgresql://tracker:Pass@Secret99@127.0.0.1:5999/db"},
             "percent-encode the password's"),
            ({"TRACKER_DATABASE__DSN": "postgresql://u:Pw3c?Secret99@h/db"}, "percent-encode the password's"),
            ({"TRACKER_DATABASE_DSN": "postgresql://u@h/db"}, "did you mean 'TRACKER_DATABASE__DSN'?")):
        p = subprocess.run(TRACKER + ["check-config"], env=env_with(TRACKER_DATABASE__STATE_DIR=state, **extra),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and said in p.stdout, (extra, p.stdout, p.stderr)
        assert "Secret99" not in p.stdout + p.stderr and "Traceback" not in p.stderr


def _run_until_ready(env, timeout=60):
    return _run_until(env, "tracker ready", timeout)


def _stop(proc, lines, timeout=30):
    """SIGTERM; the rest of its output once it has exited (within `timeout`)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while (line := _next_line(proc, deadline)) is not None:
        lines.append(line)
    return "".join(lines)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def test_run_on_a_configured_database_stops_cleanly_on_sigterm(db_dsn):
    proc, lines = _run_until_ready(env_with(TRACKER_DATABASE__DSN=db_dsn,
                                            TRACKER_HTTP__LISTEN="127.0.0.1:0",
                                            TRACKER_HTTP__OPS_LISTEN="127.0.0.1:0",
                                            TRACKER_LOG__FORMAT="json"))
    ready = json.loads(lines[-1])
    ops = "http://" + ready["ops_listen"]
    assert _get(ops + "/healthz") == (200, {"status": "alive"})
    assert _get(ops + "/readyz") == (200, {"status": "ready"})
    with urllib.request.urlopen(ops + "/metrics", timeout=5) as r:
        assert b"tracker_observations_total" in r.read()
    assert _get("http://" + ready["listen"] + "/metrics")[0] == 404  # ops are on their own listener
    log = _stop(proc, lines)
    assert proc.returncode == 0, log
    assert "tracker stopped" in log
    assert "Traceback" not in log


def test_sighup_under_a_service_manager_is_logged_and_the_daemon_runs_on(db_dsn):
    # No terminal (as under systemd): SIGHUP killed the daemon on the spot, exit 129, nothing
    # logged, its work cut off and an embedded cluster left running.
    proc, lines = _run_until_ready(env_with(TRACKER_DATABASE__DSN=db_dsn, TRACKER_LOG__FORMAT="json",
                                            TRACKER_HTTP__LISTEN="127.0.0.1:0"))
    ready = json.loads(lines[-1])
    proc.send_signal(signal.SIGHUP)
    line = _next_line(proc, time.monotonic() + 30)  # never a read without end: it hung the run
    assert line is not None and "SIGHUP ignored" in line, line
    assert _get("http://" + ready["listen"] + "/readyz") == (200, {"status": "ready"})
    log = _stop(proc, lines)
    assert proc.returncode == 0, log
    assert '"signal":"SIGTERM"' in log and "tracker stopped" in log


def test_run_on_the_embedded_default(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="tracker-embedded-"))
    os.chmod(state, 0o755)
    try:
        proc, lines = _run_until_ready(env_with(TRACKER_DATABASE__STATE_DIR=str(state / "s"),
                                                TRACKER_HTTP__LISTEN="127.0.0.1:0",
                                                TRACKER_LOG__FORMAT="json"))
        # a one-off command beside the daemon uses its cluster (it tried to start a second
        # postmaster on the same data directory, and failed with a traceback)
        migrate = subprocess.run(TRACKER + ["migrate"], capture_output=True, text=True, timeout=60,
                                 env=env_with(TRACKER_DATABASE__STATE_DIR=str(state / "s")))
        log = _stop(proc, lines)
        assert migrate.returncode == 0 and "migrations done" in migrate.stderr, migrate.stderr
        assert proc.returncode == 0, log
        assert "embedded PostgreSQL started" in log and "tracker stopped" in log
        assert not (state / "s" / "pgdata" / "postmaster.pid").exists()  # cluster stopped too
    finally:
        subprocess.run(["rm", "-rf", str(state)])


def _run_until(env, text: str, timeout=60):
    """`tracker run` until a line holding `text`; (process, lines so far). Its output is read by
    a thread into `proc.lines` (a line at a time, None at its end), so that no wait for a line
    is without bound: a daemon that says nothing fails the test, never hangs it."""
    proc = subprocess.Popen(TRACKER + ["run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    proc.lines = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            proc.lines.put(line)
        proc.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    lines = []
    deadline = time.monotonic() + timeout
    while (line := _next_line(proc, deadline)) is not None:
        lines.append(line)
        if text in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"no {text!r} from tracker run:\n" + "".join(lines))


def _next_line(proc, deadline: float) -> str | None:
    """The daemon's next line; None at its end, or once `deadline` (monotonic) has passed."""
    try:
        return proc.lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


async def test_sigterm_while_starting_stops_at_once_and_never_says_ready(db_dsn):
    # A replica waiting for another's migration lock ignored SIGTERM until the lock was free
    # (systemd's stop timeout then killed it), and said READY on the way.
    holder = await asyncpg.connect(db_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtext('tracker.migrate'))")
        proc, lines = _run_until(env_with(TRACKER_DATABASE__DSN=db_dsn, TRACKER_LOG__FORMAT="json",
                                          TRACKER_HTTP__LISTEN="127.0.0.1:0"), "database connected")
        log = _stop(proc, lines, timeout=15)  # the lock is still held: it did not wait for it
        assert proc.returncode == 0, log
        assert "tracker ready" not in log and "tracker stopped" in log
        assert "Traceback" not in log
    finally:
        await holder.close()


def test_a_database_it_cannot_use_at_start_is_one_line_naming_the_setting(tmp_path):
    unreachable = "postgresql://u:S3cretPW@127.0.0.1:9/x"
    p = subprocess.run(TRACKER + ["run"], capture_output=True, text=True, timeout=60,
                       env=env_with(TRACKER_DATABASE__DSN=unreachable, TRACKER_LOG__FORMAT="json",
                                    TRACKER_HTTP__LISTEN="127.0.0.1:0"))
    out = p.stdout + p.stderr
    assert p.returncode == 1, out  # may come back: systemd restarts it
    said = [json.loads(line) for line in out.splitlines() if "tracker cannot start" in line]
    assert len(said) == 1 and said[0]["key"] == "database.dsn", out
    assert "Traceback" not in out and "S3cretPW" not in out
    taken = tmp_path / "operator"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    p = subprocess.run(TRACKER + ["run"], capture_output=True, text=True, timeout=60,
                       env=env_with(TRACKER_DATABASE__STATE_DIR=str(taken), TRACKER_LOG__FORMAT="json",
                                    TRACKER_HTTP__LISTEN="127.0.0.1:0"))
    out = p.stdout + p.stderr
    assert p.returncode == 2, out  # a setting to change
    said = [json.loads(line) for line in out.splitlines() if "tracker cannot start" in line]
    assert len(said) == 1 and said[0]["key"] == "database.state_dir" and "notes.txt" in said[0]["reason"]
    assert "Traceback" not in out and sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_config_may_come_after_the_sinks_subcommand(tmp_path):
    bad = tmp_path / "tracker.toml"
    bad.write_text('[http]\nlisten = "nowhere"\n')
    for args in (["--config", str(bad), "sinks", "status"], ["sinks", "--config", str(bad), "status"],
                 ["sinks", "status", "--config", str(bad)]):
        p = subprocess.run(TRACKER + args, env=env_with(), capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and f"{bad}: http.listen:" in p.stderr, (args, p.stderr)


def test_only_migrate_makes_an_embedded_cluster_where_there_is_none():
    # A mistyped state_dir: replay and the sinks commands ran initdb there and left a 46 MB
    # cluster behind. Now they say there is no database, and make nothing.
    base = Path(tempfile.mkdtemp(prefix="tracker-oneshot-"))
    os.chmod(base, 0o755)  # the cluster may run as the postgres user
    try:
        empty = base / "empty"
        empty.mkdir()
        for state in (base / "typo", empty):
            env = env_with(TRACKER_DATABASE__STATE_DIR=str(state))
            for args in (["replay"], ["sinks", "status"], ["sinks", "forget", "gone"]):
                p = subprocess.run(TRACKER + args, env=env, capture_output=True, text=True, timeout=120)
                assert p.returncode == 2, (args, p.stderr)
                assert p.stderr.splitlines() == [
                    f"{args[0]}: no database at {state} (database.state_dir; no database.dsn): "
                    "is the daemon's state_dir another (under systemd: TRACKER_DATABASE__STATE_DIR="
                    "/var/lib/tracker, deploy/OPERATIONS.md, \"One-off commands\")? For a new one: "
                    "`tracker migrate` makes it"], p.stderr
                assert p.stdout == ""
        assert not (base / "typo").exists() and list(empty.iterdir()) == []
        # `tracker migrate` makes it; then the others use it.
        env = env_with(TRACKER_DATABASE__STATE_DIR=str(base / "s"))
        p = subprocess.run(TRACKER + ["migrate"], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "migrations done" in p.stderr, p.stderr
        p = subprocess.run(TRACKER + ["sinks", "status"], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "no sinks have run yet" in p.stdout, p.stderr
    finally:
        subprocess.run(["rm", "-rf", str(base)])


def test_a_state_dir_holding_others_files_is_refused_by_every_command_as_by_run(tmp_path):
    # `migrate` said "database unavailable" (exit 1: retried for ever), the others "no database
    # ... `tracker migrate` makes it", which it would not.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("an operator's\n")
    env = env_with(TRACKER_DATABASE__STATE_DIR=str(theirs))
    for args in (["migrate"], ["replay"], ["sinks", "status"], ["consumers", "status"]):
        p = subprocess.run(TRACKER + args, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (args, p.stderr)
        [line] = p.stderr.splitlines()
        assert line.startswith(f"{args[0]}: database.state_dir = {theirs}: holds files the tracker "
                               "did not make (notes.txt)"), line
    assert sorted(os.listdir(theirs)) == ["notes.txt"]


async def test_sigterm_stops_the_daemon_after_its_log_streams_reader_is_gone(db_dsn):
    """`tracker run | tee` with tee killed, journald restarted: a log line raised BrokenPipeError,
    the SIGTERM handler's among them, so the stop was never asked and systemd waited for
    SIGKILL. Lines that cannot be written are dropped (counted), and the stop goes on."""
    env = env_with(TRACKER_DATABASE__DSN=db_dsn, TRACKER_HTTP__LISTEN="127.0.0.1:0",
                   TRACKER_LOG__FORMAT="json")
    proc = subprocess.Popen(TRACKER + ["run"], env=env, stdout=subprocess.PIPE, bufsize=0,  # select sees
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)             # every byte
    try:
        deadline = time.monotonic() + 60
        while True:  # its own reads (no pump thread: this test closes the pipe), each bounded
            waited = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]
            assert waited and proc.poll() is None, "never ready"
            if b"tracker ready" in proc.stdout.readline():
                break
        proc.stdout.close()  # the reader goes away; the daemon logs on
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
