"""The NATS sink's stream: there, taking the sink's subjects, or created where allowed; and the
error a turn of the sink ends with when something was not published (tracker.sinks.jetstream)."""
from __future__ import annotations

from typing import Iterable

import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from tracker.config_types import NatsSinkConfig
from tracker.logging import get_logger
from tracker.sinks.natsmsg import not_taken

log = get_logger("tracker.sinks.nats")


class PublishFailed(Exception):
    """Part of a batch was not acknowledged; the cursor stops before it."""


async def ensure_stream(js, cfg: NatsSinkConfig, vendors: Iterable[str], again: bool) -> None:
    """The configured stream, created if missing and allowed; it must take the subject of every
    event the sink's vendors can have (else another stream, or none, would get them). `again`:
    this stream acknowledged the sink's events before (in this daemon's life or, by
    tracker.sinks.acked_stream, an earlier one's), so missing now it was lost (a broker's storage
    wiped) with them: made anew, and said loudly. A stream renamed in the configuration is
    another name: made as at a first start."""
    try:
        info = await js.stream_info(cfg.stream)
    except nats.js.errors.NotFoundError:
        if not cfg.create_stream:
            raise PublishFailed(f"stream {cfg.stream} does not exist on the broker; create "
                                "it, or set create_stream = true") from None
        # Bounded in age unless told otherwise: JetStream's own default keeps every event for
        # ever (590 bytes each: gigabytes a day at a few million events), until its storage is
        # full and the sink's publishes fail. Older events stay in the outbox for replays.
        await js.add_stream(StreamConfig(
            name=cfg.stream, subjects=[f"{cfg.subject_prefix}.>"],
            storage=StorageType.FILE, duplicate_window=cfg.duplicate_window_s,
            max_age=cfg.max_age_days * 86400 or None))
        if again:
            log.warning("NATS stream created again: the stream this sink published to was gone "
                        "from the broker, with the events it had acknowledged (its storage lost?)",
                        sink=cfg.name, stream=cfg.stream)
        else:
            log.info("NATS stream created", sink=cfg.name, stream=cfg.stream,
                     duplicate_window_s=cfg.duplicate_window_s,
                     max_age_days=cfg.max_age_days or "for ever")
        return
    prefix, taken = cfg.subject_prefix, info.config.subjects or []
    missing = not_taken(prefix, taken, vendors)
    if missing:
        raise PublishFailed(f"stream {cfg.stream} does not take the sink's subjects {prefix}.>"
                            f" (e.g. {missing[0]}; its subjects: {', '.join(taken) or 'none'});"
                            f" add {prefix}.> to them")
