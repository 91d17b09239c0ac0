"""The vendor adapters: one small sans-I/O module per vendor, each keeping the contract declared
in tracker.adapters.contract (the Adapter protocol, plus the optional abilities LogsIn,
ListsMessages, PollsInBatches, SignsPostbacks). Mapping tables: docs/vendors.md. Adding a
vendor: docs/adding-a-vendor.md.

The registry below is the one place that names the vendors: configuration (VENDORS), intake,
the poller, the postback routes and the sandbox all take them from here.
"""
from __future__ import annotations

from importlib import import_module

from tracker.adapters.contract import Adapter

# The registered vendors, in the order they are shown (one module each: tracker/adapters/<name>.py).
REGISTERED = ("sparksender", "engagespark", "skycore", "sparrow", "twilio")

ADAPTERS: dict[str, Adapter] = {name: import_module(f"tracker.adapters.{name}") for name in REGISTERED}
VENDORS: tuple[str, ...] = tuple(ADAPTERS)
# Vendors whose id names a batch, so that a message is (vendor_ref, recipient).
KEYED_BY_RECIPIENT = frozenset(name for name, a in ADAPTERS.items() if a.KEYED_BY_RECIPIENT)


def get(vendor: str) -> Adapter:
    """The adapter module for `vendor`; KeyError naming the known vendors otherwise."""
    try:
        return ADAPTERS[vendor]
    except (KeyError, TypeError):
        raise KeyError(f"unknown vendor {vendor!r}; known vendors: {', '.join(sorted(ADAPTERS))}") from None


__all__ = ["ADAPTERS", "KEYED_BY_RECIPIENT", "VENDORS", "get"]
