"""The daemon's event loop (tracker.loop): uvloop where installed, asyncio's when asked."""
import asyncio

from tracker import loop


async def _kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_uvloop_by_default_where_installed(monkeypatch):
    monkeypatch.delenv("TRACKER_LOOP", raising=False)
    assert loop.name() == "uvloop"  # a dependency (pyproject.toml)
    assert loop.run(_kind()) == "uvloop"


def test_asyncio_when_asked(monkeypatch):
    monkeypatch.setenv("TRACKER_LOOP", "asyncio")
    assert loop.name() == "asyncio"
    assert loop.run(_kind()) == "asyncio"
