"""What the HTTP client (tracker.http.client) raises: no usable answer. The text of each is the
kind of failure in words, never the URL or body (requests carry credentials)."""
from __future__ import annotations

from multidict import CIMultiDict

# Two kinds of TransportError that callers tell apart (tracker.sinks.delivery words them).
TIMEOUT = "timeout"
CLOSED = "closed the connection without answering"


class TransportError(Exception):
    """No usable answer (timeout, refused, reset, oversized). The text is the kind of failure."""


class TooLarge(TransportError):
    """The answer's body ran past the limit; its status and headers came."""

    def __init__(self, status: int, headers: CIMultiDict) -> None:
        super().__init__("answer too large")
        self.status, self.headers = status, headers
