"""What the polling benches share: a database (a private embedded cluster unless a DSN is
given), the sandbox in its own process, and `tracker run` in its own process. Loopback only;
everything started here is stopped here."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from tracker.db.embedded import EmbeddedPostgres  # noqa: E402
from tracker.db.migrate import migrate  # noqa: E402
from tracker.sandbox import send_many  # noqa: E402

PY = sys.executable
SUBMIT = "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)"


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, int | None]]:
    """(DSN, postmaster pid when the cluster is our own embedded one)."""
    if dsn:
        yield dsn, None
        return
    tmp = tempfile.mkdtemp(prefix="tracker-bench-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    pg = EmbeddedPostgres(Path(tmp) / "pg")
    try:
        pg.start()
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        yield pg.dsn, pid
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """User + system CPU of a process (and of its direct children: a PostgreSQL cluster)."""
    if pid is None:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or (children and int(fields[1]) == pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class CpuMeter:
    """CPU seconds each process used within a `with` block: {name: (pid, with its children)};
    per call made, in microseconds (NaN for a pid that is None: not ours to read)."""

    def __init__(self, pids: dict[str, tuple[int | None, bool]]):
        self.pids = pids

    def __enter__(self) -> "CpuMeter":
        self.start = {k: cpu_seconds(pid, kids) for k, (pid, kids) in self.pids.items()}
        return self

    def __exit__(self, *exc) -> None:
        self.used = {k: cpu_seconds(pid, kids) - self.start[k] for k, (pid, kids) in self.pids.items()}

    def per_call_us(self, calls: int) -> dict[str, float]:
        return {k: v / max(calls, 1) * 1e6 for k, v in self.used.items()}


async def migrated(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def sandbox(knobs: dict) -> AsyncIterator[dict]:
    """`python -m tracker.sandbox` on a free loopback port; yields what it prints (url, vendors)."""
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "tracker.sandbox", "--port", "0", "--knobs", orjson.dumps(knobs).decode(),
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
    try:
        text = b""
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the sandbox exited before it was ready")
            text += line
            if line.rstrip() == b"}":
                break
        yield {**orjson.loads(text), "pid": proc.pid}
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await proc.wait()


def toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, dsn: str, vendors: dict[str, dict]) -> Path:
    lines = ["[database]", f"dsn = {toml(dsn)}", "pool_min = 2", "pool_max = 10",
             "[http]", 'listen = "127.0.0.1:0"', "[log]", 'level = "info"', 'format = "json"']
    for name in ("sparksender", "engagespark", "skycore", "sparrow"):
        lines.append(f"[vendors.{name}]")
        settings = vendors.get(name, {"enabled": False})
        lines += [f"{k} = {toml(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """`tracker run` with a config file, in its own process; `rss_kib()` reads /proc."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None):
        self.config, self.log = config, log
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Daemon":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
        env.update(self.env)
        if "TRACKER_LOOP" in os.environ:  # the event loop chosen for the run (tracker.loop)
            env.setdefault("TRACKER_LOOP", os.environ["TRACKER_LOOP"])
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([PY, "-m", "tracker", "--config", str(self.config), "run"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + timeout
        while b"tracker ready" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()  # never leave it running behind us
                raise RuntimeError("tracker run did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.1)
        return self

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_kib(self) -> int:
        return self.status("VmRSS")

    def peak_kib(self) -> int:
        return self.status("VmHWM")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def send_sparksender(vendor: dict, n: int, prefix: str) -> list:
    """`n` Spark Sender messages sent through the sandbox (`vendor`: its settings there) in bulk
    calls of 1,000; the recipients are `prefix` and eight digits."""
    calls = []
    async with aiohttp.ClientSession() as http:
        for k in range(0, n, 1000):
            calls += await send_many({"sparksender": vendor}, "sparksender",
                                     [f"{prefix}{i:08d}" for i in range(k, min(k + 1000, n))],
                                     bulk=True, session=http)
    return calls


async def submit(db: asyncpg.Connection | asyncpg.Pool, calls: list) -> None:
    """The send calls written as the sending application writes them: tracker.submissions rows."""
    await db.executemany(SUBMIT, [(c.vendor, orjson.dumps(c.request).decode(),
                                   orjson.dumps(c.response).decode()) for c in calls])
