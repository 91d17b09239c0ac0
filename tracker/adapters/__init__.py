"""The vendor adapters: one small sans-I/O module per vendor, each keeping the contract declared
in tracker.adapters.contract (the Adapter protocol, plus the optional abilities LogsIn,
ListsMessages, PollsInBatches, SignsPostbacks, Configured). Mapping tables: docs/vendors.md.
Adding a vendor: docs/adding-a-vendor.md.

The registry below is the one place that names the vendors: configuration (VENDORS), intake,
the poller, the postback routes and the sandbox all take them from here.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from tracker.adapters.contract import Adapter

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

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


def for_config(vendor: str, cfg: VendorConfig | None) -> Adapter:
    """The adapter to parse `vendor`'s answers with under `cfg`: bound to its settings for a
    vendor that reads some (Configured), else the module itself (also when `cfg` is None).
    KeyError for an unknown vendor; NotConfigured for a setting the adapter cannot honour.
    Called for every postback: no Protocol isinstance (slow), and each configuration bound once."""
    adapter = get(vendor)
    configured = getattr(adapter, "configured", None)
    if cfg is None or configured is None:
        return adapter
    hit = _bound.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        hit = _bound[id(cfg)] = (cfg, configured(cfg))
    return hit[1]


_bound: dict[int, tuple[VendorConfig, Adapter]] = {}  # id(cfg): (cfg, its adapter); cfg kept alive


__all__ = ["ADAPTERS", "KEYED_BY_RECIPIENT", "VENDORS", "for_config", "get"]
