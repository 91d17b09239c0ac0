"""Database faults made to happen in a test: PostgreSQL refusing a statement for what a row holds
(a trigger that raises an error of a given SQLSTATE when a condition on the row holds: a real
refusal, through the real statement, without data that takes minutes to build), and a database
that does not answer (FreezingProxy): every connection, or those open now only (a NAT table
flushed, a failover that dropped packets: the sockets stay open, nothing passes, and new
connections work)."""
from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit, urlunsplit


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


class FreezingProxy:
    """A TCP proxy in front of PostgreSQL (the transport seam) that can stop passing bytes either
    way: a database that does not answer, as behind a network partition or a storage stall,
    whatever server the tests use. `dsn(db_dsn)` is `db_dsn` through the proxy."""

    def __init__(self, upstream_dsn: str) -> None:
        parts = urlsplit(upstream_dsn)
        host = unquote(parts.netloc.rpartition("@")[2].rpartition(":")[0]) or "127.0.0.1"  # case kept
        self.upstream = (host, parts.port or 5432)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.connections: list[asyncio.Event] = []  # each connection's own flow

    def silence_open_connections(self) -> None:
        """Nothing passes any more on the connections open now, for good; new ones flow."""
        for flowing in self.connections:
            flowing.clear()

    async def start(self) -> FreezingProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    def dsn(self, db_dsn: str) -> str:
        parts = urlsplit(db_dsn)
        port = self.server.sockets[0].getsockname()[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}", query="sslmode=disable"))

    async def stop(self) -> None:
        self.flowing.set()
        self.server.close()
        for w in self.writers:
            w.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream
        if host.startswith("/"):  # a socket directory (the embedded cluster's)
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.writers += [writer, up_writer]
        own = asyncio.Event()
        own.set()
        self.connections.append(own)
        await asyncio.gather(self._pipe(reader, up_writer, own), self._pipe(up_reader, writer, own),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    own: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()  # frozen: held, never dropped
                await own.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
