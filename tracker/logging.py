"""Structured logging (docs/design.md#contract-7): structlog, JSON lines in production, readable on a terminal.

Secrets never get out: a redaction processor masks values of secret-named keys, every registered secret
(tracker.config registers all configured ones), URL credentials and query parameters, and the token
segment of ``/postbacks/<vendor>/<token>`` paths, in every value including exception tracebacks.
The registered secrets themselves are tracker.masking's (which also keeps them out of stored rows).

Malformed HTTP cannot flood the log: aiohttp's server logs each request it cannot parse as an ERROR
with a full traceback; :class:`MalformedRequestFilter` turns those into one brief WARNING each, at
most a few a minute, and counts the rest.
"""
from __future__ import annotations

import logging as _stdlib_logging
import re
import sys
import time
from functools import lru_cache, partial
from typing import Any, Callable, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from tracker.config import redact_dsn
from tracker.masking import MASK, mask_secrets, register_secret, shortened

__all__ = ["MalformedRequestFilter", "configure", "get_logger", "redact", "register_secret", "scrub"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_SENSITIVE = ("api_key", "apikey", "token", "password", "passwd", "secret", "authorization", "cookie", "dsn")

_stream: TextIO | None = None

# name=value / name: value / "name": "value" / ?name=value, for secret-looking names.
_NAMED = re.compile(
    r"(?P<pre>\b(?:api_?key|[a-z_]*token|password|passwd|[a-z_]*secret)['\"]?\s*[=:]\s*['\"]?)"
    r"(?!\*\*\*)[^\s&'\",;}\]]+",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"\b(?P<pre>(?:Bearer|Token|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}")
_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@\s]*@")
_POSTBACK = re.compile(r"(?P<pre>/postbacks/[^/\s?#]+/)[^/\s?#'\"]+")


@lru_cache(maxsize=4096)
def _is_sensitive(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(k == s or k.endswith("_" + s) for s in _SENSITIVE)


def scrub(text: str) -> str:
    """``text`` with registered secrets and credential-looking parts masked."""
    text = mask_secrets(text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: m.group("pre") + MASK + "@", text)
    if "/postbacks/" in text:
        text = _POSTBACK.sub(lambda m: m.group("pre") + MASK, text)
    if "=" in text or ":" in text:
        text = _NAMED.sub(lambda m: m.group("pre") + MASK, text)
    if " " in text:
        text = _AUTH_SCHEME.sub(lambda m: m.group("pre") + MASK, text)
    return text


def _encodable(text: str) -> str:
    """`text` as UTF-8 can hold it: a header's undecodable byte (aiohttp keeps it as a lone
    surrogate) escaped, not an encoder's exception that turned the request it logs into a 500."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _redact_value(key: str, value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if key and _is_sensitive(key):
        if isinstance(value, str) and key.lower().endswith("dsn"):
            return scrub(redact_dsn(value))
        return MASK
    if isinstance(value, str):
        return scrub(_encodable(value))
    if isinstance(value, (int, float)):
        return value
    if depth < 4:
        if isinstance(value, dict):
            return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_redact_value("", v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return scrub(bytes(value).decode("utf-8", "replace"))
    return scrub(str(value))


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets in every key and value (including formatted exceptions)."""
    return {k: _redact_value(k, v) for k, v in event_dict.items()}


# aiohttp's loggers that report requests its server could not parse.
AIOHTTP_SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web")
MALFORMED_PER_MINUTE = 10
MALFORMED_ERROR_MAX_CHARS = 200  # the parser's message may quote kilobytes of the request
EXTRA_FIELDS = "tracker_fields"  # a stdlib record attribute: fields the bridge passes to structlog


class MalformedRequestFilter(_stdlib_logging.Filter):
    """Rewrites aiohttp's "Error handling request" records for unparseable requests (an 8 KB
    URL, bad header bytes, Transfer-Encoding with Content-Length, TLS or other bytes that are not
    HTTP at all, ...) into one brief WARNING: the peer, the error's type and its message, no
    traceback. Each is counted (tracker_http_malformed_total{kind}). Anyone who can reach the
    listener can send those, so at most ``per_minute`` are logged per minute; the next one
    logged after a quiet spell carries ``suppressed``, the count of those left out. aiohttp logs
    a connection's first request that is not HTTP at debug level only, so its loggers are let
    through at debug and any other record below the root's level is dropped here: a vendor
    posting TLS to the plain port (an `https://` URL) looked like that vendor gone quiet. Other
    records (a handler's own exception, say) pass unchanged."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int = MALFORMED_PER_MINUTE, clock: Any = time.monotonic):
        super().__init__()
        self.per_minute = per_minute
        self.clock = clock
        self.window_start = float("-inf")
        self.logged_in_window = 0
        self.suppressed = 0

    def filter(self, record: _stdlib_logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return record.levelno >= _stdlib_logging.getLogger().getEffectiveLevel()
        from tracker import metrics
        metrics.http_malformed.labels(malformed_kind(exc)).inc()
        if not self._may_log():
            self.suppressed += 1
            return False
        self._make_brief(record, exc)
        return True

    def _may_log(self) -> bool:
        now = self.clock()
        if now - self.window_start >= self.WINDOW_S:
            self.window_start, self.logged_in_window = now, 0
        if self.logged_in_window >= self.per_minute:
            return False
        self.logged_in_window += 1
        return True

    def _make_brief(self, record: _stdlib_logging.LogRecord, exc: HttpProcessingError) -> None:
        fields: dict[str, Any] = {"error": _brief_error(exc)}
        if isinstance(record.args, tuple) and record.args:  # "Error handling request from %s"
            fields["peer"] = str(record.args[0])
        if self.suppressed:
            fields["suppressed"], self.suppressed = self.suppressed, 0
        setattr(record, EXTRA_FIELDS, fields)
        record.msg, record.args = "malformed HTTP request refused", ()
        record.levelno, record.levelname = _stdlib_logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None


def malformed_kind(exc: HttpProcessingError) -> str:
    """`tls` (a TLS handshake, 0x16 0x03, on the plain port), `not_http` (other bytes no HTTP
    method starts with), `bad_request` (HTTP the parser refuses)."""
    if type(exc).__name__ != "BadHttpMethod":
        return "bad_request"
    said = str(exc.message or exc)
    return "tls" if "HTTPS traffic" in said or "\\x16\\x03" in said else "not_http"


def _brief_error(exc: HttpProcessingError) -> str:
    """``Type: message`` on one line, cut short: the message may quote the request itself."""
    text = shortened(" ".join(str(exc.message or exc).split()), MALFORMED_ERROR_MAX_CHARS)
    return f"{type(exc).__name__}: {text}"


_malformed_requests = MalformedRequestFilter()


def _filter_aiohttp_server_logs() -> None:
    for name in AIOHTTP_SERVER_LOGGERS:
        logger = _stdlib_logging.getLogger(name)
        logger.setLevel(_stdlib_logging.DEBUG)  # its debug line for bytes that are not HTTP (above)
        for f in [f for f in logger.filters if isinstance(f, MalformedRequestFilter)]:
            logger.removeFilter(f)
        logger.addFilter(_malformed_requests)


def _orjson_dumps(obj: Any, **_kw: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


class _StdlibBridge(_stdlib_logging.Handler):
    """Forwards records of libraries using stdlib logging (asyncio, aiohttp, asyncpg) through structlog."""

    def emit(self, record: _stdlib_logging.LogRecord) -> None:
        try:
            kw: dict[str, Any] = dict(getattr(record, EXTRA_FIELDS, {}))
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **kw)
        except Exception:  # pragma: no cover - never let logging break the caller
            self.handleError(record)


def _lost(write: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """A line that cannot be written (the stream's reader gone: a killed `tee`, journald
    restarted) is dropped and counted (tracker_log_lines_lost_total), never raised: raised, it
    stopped whatever logged it, a signal handler among them (SIGTERM was lost, and the stop
    waited for SIGKILL with the embedded cluster left running)."""
    def msg(self: Any, message: Any) -> None:
        try:
            write(self, message)
        except (OSError, ValueError):  # EPIPE, EIO; ValueError: the stream was closed
            from tracker import metrics
            metrics.log_lines_lost.inc()
    return msg


class _NamedWriteLogger(structlog.WriteLogger):
    def __init__(self, file: TextIO, name: str | None = None):
        super().__init__(file)
        self.name = name

    msg = _lost(structlog.WriteLogger.msg)
    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


class _NamedBytesLogger(structlog.BytesLogger):
    def __init__(self, file: Any, name: str | None = None):
        super().__init__(file)
        self.name = name

    msg = _lost(structlog.BytesLogger.msg)
    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


def _add_logger_name(logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def configure(level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None,
              cache: bool = True) -> None:
    """Set up structlog. ``fmt``: json | console | auto (JSON unless ``stream`` is a TTY).

    ``stream`` defaults to stderr. ``cache=False`` keeps loggers reconfigurable (tests).
    """
    lvl = _LEVELS.get(level.lower())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    global _stream
    stream = _stream = sys.stderr if stream is None else stream  # keep it alive: it owns .buffer
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "console" if isatty is not None and isatty() else "json"

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    logger_factory: Any  # called with the name given to get_logger(), if any
    if fmt == "json":
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            processors.append(structlog.processors.JSONRenderer(serializer=_orjson_dumps))
            logger_factory = partial(_NamedBytesLogger, buffer)
        else:
            processors.append(structlog.processors.JSONRenderer(
                serializer=lambda o, **kw: _orjson_dumps(o).decode()))
            logger_factory = partial(_NamedWriteLogger, stream)
    else:
        isatty = getattr(stream, "isatty", None)
        processors.append(structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty())))
        logger_factory = partial(_NamedWriteLogger, stream)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=logger_factory,
        cache_logger_on_first_use=cache,
    )

    root = _stdlib_logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(h)
    root.addHandler(_StdlibBridge())
    root.setLevel(lvl)
    _filter_aiohttp_server_logs()


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger (lazy: usable at import time); its records carry ``logger=name``."""
    return structlog.get_logger(name, **initial) if name is not None else structlog.get_logger(**initial)
