"""A nats-server of our own for the NATS sink tests (JetStream on a free loopback port), and what
its stream holds, checked against the events (tests.sinks_support makes them)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nats
import orjson
import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A nats-server with JetStream on a free loopback port, storing under `store_dir`;
    restartable on the same port and store. `max_payload`: the server's limit, if not its
    default (it has no command-line flag: set in a configuration file), as `conf` (the text of
    one: users and their permissions, say)."""

    def __init__(self, store_dir: Path, max_payload: int | None = None, conf: str = ""):
        self.store_dir, self.port = store_dir, free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"nats://127.0.0.1:{self.port}"
        self.conf = conf + (f"\nmax_payload: {max_payload}\n" if max_payload is not None else "")

    def _args(self) -> list[str]:
        args = [NATS_SERVER, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.conf:
            conf = self.store_dir / "nats.conf"
            conf.write_text(self.conf)
            args += ["-c", str(conf)]
        return args

    def start(self, timeout: float = 15.0) -> "NatsServer":
        with (self.store_dir / "nats.log").open("ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start:\n"
                                   + (self.store_dir / "nats.log").read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def nats_available() -> bool:
    return os.access(NATS_SERVER, os.X_OK)


# Skipped on a developer's machine without nats-server; never under CI (CI set, as .ci/run
# sets it): there the test runs and fails if the broker is missing.
needs_nats = pytest.mark.skipif(not nats_available() and not os.environ.get("CI"),
                                reason="nats-server is not installed (.ci/run installs it)")


STREAM = "SMS_EVENTS"


async def stream_messages(url: str) -> list:
    """Every message in the stream, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        n = (await js.stream_info(STREAM)).state.messages
        return [await js.get_msg(STREAM, seq) for seq in range(1, n + 1)]
    finally:
        await nc.close()


async def stream_count(url: str) -> int:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    except Exception:  # noqa: BLE001 - a broker still starting
        return -1
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.messages
    except Exception:  # noqa: BLE001 - no stream yet
        return -1
    finally:
        await nc.close()


def check_stream(msgs: list, evs: list[dict]) -> None:
    """Once per Nats-Msg-Id, every event, right subject, in order per message."""
    ids = [m.headers["Nats-Msg-Id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a Nats-Msg-Id stored twice"
    assert {int(i) for i in ids} == {e["event_id"] for e in evs}
    pos = {e["event_id"]: e["pos"] for e in evs}
    last: dict[int, int] = {}
    for m in msgs:
        body = orjson.loads(m.data)
        d = body["data"]
        assert m.subject == f"sms.events.{d['vendor']}.{d['to_state']}"
        assert m.headers["Nats-Msg-Id"] == str(d["event_id"]) and body["type"] == f"message.{d['to_state']}"
        assert pos[d["event_id"]] > last.get(d["message_id"], 0), "out of order for a message"
        last[d["message_id"]] = pos[d["event_id"]]
