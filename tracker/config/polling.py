"""Which vendors `tracker run` polls, and whether each has what its adapter needs to ask: the
adapter's own check, the NotConfigured it raises while building the requests the poller sends
(so that check-config refuses what would open the vendor's circuit at its first poll with
"account error config: ... must be configured"). The rules stay in the adapters."""
from __future__ import annotations

from tracker import adapters
from tracker.adapters.base import MessageRef, NotConfigured
from tracker.adapters.contract import ListsMessages, LogsIn
from tracker.config_types import VendorConfig

_PROBE = [MessageRef("check-config")]  # status_requests sends ids verbatim: any id does
_TOKEN = "check-config"  # a LogsIn vendor's status calls carry a login's token


def polled(name: str, cfg: VendorConfig) -> bool:
    """tracker.poller.engine.Poller.start's rule: a vendor with a status query, enabled, and
    with a base_url (without one it logs "not polled" and leaves the vendor alone)."""
    return bool(adapters.get(name).POLLS and cfg.enabled and cfg.base_url)


def not_configured(name: str, cfg: VendorConfig) -> str | None:
    """The adapter's reason (NotConfigured) it cannot build the requests a poll of ``name``
    sends: its login, its status calls, its list pages; None when it can. Builds requests
    only: nothing is sent."""
    adapter = adapters.get(name)
    try:
        token = None
        if isinstance(adapter, LogsIn):
            adapter.login_request(cfg)
            token = _TOKEN
        adapter.status_requests(cfg, _PROBE, token)
        if isinstance(adapter, ListsMessages):
            adapter.list_request(cfg, page=1)
    except NotConfigured as e:
        return str(e) or type(e).__name__
    return None
