"""What the sinks' configuration shows and hides: the secrets to mask wherever they would
appear (logs, errors, stored rows) and check-config's summary lines, which quote no secret."""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

from tracker.config_types import SinksConfig
from tracker.sinks.checks import public_url


def secrets_of(sinks: SinksConfig) -> list[str]:
    """Every secret in the sinks' configuration: whsec_ secrets, server URL passwords, and a
    webhook URL's path and query (receivers put tokens there; logs show scheme://host only)."""
    out = [s for w in sinks.webhooks.values() for s in w.secrets]
    out += [s.removeprefix("whsec_") for w in sinks.webhooks.values() for s in w.secrets]
    for w in sinks.webhooks.values():
        try:
            u = urlsplit(w.url)
        except ValueError:
            continue
        rest = u.path + (f"?{u.query}" if u.query else "")
        out += [x for x in (u.password, rest if len(rest) >= 8 else None) if x]
    for n in sinks.nats.values():
        for server in n.servers:
            try:
                u = urlsplit(server)
            except ValueError:
                continue
            said = (u.password, u.username if u.password is None else None)
            out += [y for x in said if x for y in {x, unquote(x)}]  # as written, as sent
    return out


def summary(sinks: SinksConfig) -> list[str]:
    lines = []
    for w in sinks.webhooks.values():
        filters = [f"vendors={','.join(w.vendors)}"] if w.vendors else []
        filters += [f"states={','.join(w.states)}"] if w.states else []
        lines.append(f"sink {w.name}: webhook to {public_url(w.url)}, {len(w.secrets)} secret(s)"
                     f"{', ' + ' '.join(filters) if filters else ''}{'' if w.enabled else ', disabled'}")
    for n in sinks.nats.values():
        lines.append(f"sink {n.name}: NATS JetStream stream {n.stream}, subjects {n.subject_prefix}.>,"
                     f" {len(n.servers)} server(s){'' if n.enabled else ', disabled'}")
    return lines
