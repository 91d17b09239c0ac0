"""What the chaos scenarios run on, all on this machine and loopback only: one private PostgreSQL
cluster (crashed and started again by the database scenarios), a database per scenario, the
sandbox in its own process (`python -m tracker.sandbox`), and `tracker run` daemons, each in its
own process, that can be killed with SIGKILL and started again on the same port."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tracker.db.embedded import EmbeddedPostgres, socket_dsn  # noqa: E402
from tracker.db.migrate import migrate  # noqa: E402

PY = sys.executable
TEMPLATE = "chaos_template"
TOKENS = {v: f"chaos-{v}-postback-token-7d1e"
          for v in ("skycore", "engagespark", "sparrow", "twilio")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A private cluster (fsync on, as an operator's would be) in a temporary directory."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tracker-chaos-"))
        os.chmod(self.tmp, 0o755)  # as root, the cluster runs as the postgres user
        self.pg = EmbeddedPostgres(self.tmp / "pg")

    def dsn(self, database: str) -> str:
        return socket_dsn(self.pg.socket_dir, self.pg.port, database)

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn(TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def create_db(self, name: str, settings: dict[str, str] | None = None) -> str:
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
            for key, value in (settings or {}).items():
                await admin.execute(f"ALTER DATABASE {name} SET {key} = '{value}'")
        finally:
            await admin.close()
        return self.dsn(name)

    async def configure(self, settings: dict[str, str | None]) -> None:
        """Server settings by ALTER SYSTEM (None: back to the default), then a reload."""
        if not settings:
            return
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            for key, value in settings.items():
                await admin.execute(f"ALTER SYSTEM RESET {key}" if value is None
                                    else f"ALTER SYSTEM SET {key} = '{value}'")
            await admin.execute("SELECT pg_reload_conf()")
        finally:
            await admin.close()

    async def drop_db(self, name: str) -> None:
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

    async def crash(self) -> None:
        """Stop in immediate mode: every server process quits at once, nothing is flushed or
        checkpointed; the next start recovers from the WAL, as after a crash."""
        await asyncio.to_thread(self.pg._cmd, "pg_ctl", "stop", "-D", str(self.pg.data_dir),
                                "-m", "immediate", "-w")

    async def restart(self) -> None:
        await asyncio.to_thread(self.pg.start)

    def stop(self) -> None:
        self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class SandboxProc:
    """`python -m tracker.sandbox` on a free loopback port, driven by its admin routes."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.http: aiohttp.ClientSession | None = None
        self.requests: list[dict[str, Any]] = []
        self.postbacks: list[dict[str, Any]] = []
        self.pending = 0  # postbacks still to go out, as of the last collect()

    @property
    def url(self) -> str:
        return self.info["url"]

    def vendor(self, name: str) -> dict[str, str]:
        return self.info["vendors"][name]

    async def start(self, knobs: dict[str, Any]) -> "SandboxProc":
        self.proc = await asyncio.create_subprocess_exec(
            PY, "-m", "tracker.sandbox", "--port", "0", "--knobs", orjson.dumps(knobs).decode(),
            stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
        text = b""
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the sandbox exited before it was ready")
            text += line
            if line.rstrip() == b"}":
                break
        self.info = orjson.loads(text)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def _admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + path,
                                     data=None if body is None else orjson.dumps(body)) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"sandbox {path}: {r.status} {data[:200]!r}")
            return orjson.loads(data)

    async def knobs(self, common: dict[str, Any] | None = None, **per_vendor: dict) -> None:
        await self._admin("POST", "/_sandbox/knobs", {**(common or {}), "vendors": per_vendor})

    async def postback_url(self, vendor: str, url: str) -> None:
        await self._admin("POST", "/_sandbox/postback_url", {"vendor": vendor, "url": url})

    async def truth(self) -> list[dict[str, Any]]:
        return (await self._admin("GET", "/_sandbox/truth"))["truth"]

    async def collect(self) -> None:
        """Copy the request and postback logs gathered since the last call (the sandbox keeps
        only the last 100,000 entries of each)."""
        for name in ("requests", "postbacks"):
            log = getattr(self, name)
            got = await self._admin("GET", f"/_sandbox/{name}?since={len(log)}")
            log.extend(got[name])
            self.pending = got.get("pending", self.pending)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def toml(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, dsn: str, port: int, vendors: dict[str, dict[str, Any]],
                 extra: dict[str, dict[str, Any]] | None = None) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn, "pool_min": 2, "pool_max": 8},
        "http": {"listen": f"127.0.0.1:{port}"},
        "intake": {"sweep_interval_s": 0.5},
        "log": {"level": "info", "format": "json"},
    }
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    for name, values in vendors.items():
        sections[f"vendors.{name}"] = values
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """`tracker run` in its own process; start() again after kill() reuses port and log."""

    def __init__(self, name: str, config: Path, log: Path, port: int) -> None:
        self.name, self.config, self.log, self.port = name, config, log, port
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def postback_url(self, vendor: str) -> str:
        return f"{self.base}/postbacks/{vendor}/{TOKENS[vendor]}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 60.0) -> None:
        ready_before = self._ready_lines()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "tracker", "--config", str(self.config), "run"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        self.starts += 1
        deadline = time.monotonic() + timeout
        while self._ready_lines() <= ready_before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                await self.stop()
                raise RuntimeError(f"daemon {self.name} did not start:\n{tail}")
            await asyncio.sleep(0.05)

    def _ready_lines(self) -> int:
        try:
            return self.log.read_bytes().count(b'"tracker ready"')
        except FileNotFoundError:
            return 0

    async def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


@contextlib.asynccontextmanager
async def pool_for(dsn: str, size: int = 2) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=size)
    try:
        yield pool
    finally:
        await pool.close()
