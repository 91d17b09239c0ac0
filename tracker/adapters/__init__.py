"""The vendor adapters: one small sans-I/O module per vendor, all with the same names
(NAME, POLLS, PUSHES, BATCH_POLL, KEYED_BY_RECIPIENT, normalize_ref, status_requests,
parse_status, parse_postback, parse_send; Sparrow adds login_request / parse_login,
engageSPARK list_request / parse_list). Mapping tables: docs/vendors.md.
"""
from __future__ import annotations

from types import ModuleType

from tracker.adapters import engagespark, skycore, sparksender, sparrow

ADAPTERS: dict[str, ModuleType] = {m.NAME: m for m in (sparksender, engagespark, skycore, sparrow)}


def get(vendor: str) -> ModuleType:
    """The adapter module for `vendor`; KeyError naming the known vendors otherwise."""
    try:
        return ADAPTERS[vendor]
    except (KeyError, TypeError):
        raise KeyError(f"unknown vendor {vendor!r}; known vendors: {', '.join(sorted(ADAPTERS))}") from None


__all__ = ["ADAPTERS", "get"]
