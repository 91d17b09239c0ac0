"""``database.dsn`` checked by asyncpg's own DSN parser, the one `tracker run` and `tracker migrate`
will use, so that check-config refuses what they would (a libpq key=value string, ``?sslmode=bogus``)
and says why, without the password.

The parser is internal to asyncpg (``asyncpg.connect_utils._parse_connect_dsn_and_args``); should
a new asyncpg rename it or change how it is called, :func:`dsn_problem` raises
:class:`DsnParserChanged` rather than accept every DSN unchecked (tests/unit/test_dsn_checks.py).
"""
from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from asyncpg import connect_utils

from tracker.config.redaction import MASK, dsn_passwords, redact_dsn

_PARSER_NAME = "_parse_connect_dsn_and_args"
_KEY_VALUE = re.compile(r"\s*[A-Za-z_]+\s*=")
_URL = re.compile(r"\s*postgres(?:ql)?://", re.IGNORECASE)
URL_FORM = "postgresql://user:password@host:port/dbname"
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_ENCODE = ("percent-encode the password's / ? # @ : [ ] and spaces (e.g. / as %2F, @ as %40), "
           f"as in {URL_FORM}")
_CANNOT_PARSE = f"asyncpg cannot parse the URL because of a character in its password (hidden): {_ENCODE}"
_MISREADS = ("asyncpg would read another host, port or database from the URL because of a "
             f"character in its password (hidden): {_ENCODE}")


class DsnParserChanged(RuntimeError):
    """asyncpg's internal DSN parser is not where, or not what, this module expects."""


def _parser() -> Callable[..., Any]:
    parse = getattr(connect_utils, _PARSER_NAME, None)
    if parse is None:
        raise DsnParserChanged(f"asyncpg.connect_utils.{_PARSER_NAME} is gone: tracker.config.dsn "
                               "must be updated for this asyncpg")
    params = inspect.signature(parse).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "dsn"]
    if "dsn" not in params or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params.values()):
        raise DsnParserChanged(f"asyncpg.connect_utils.{_PARSER_NAME}{inspect.signature(parse)} is "
                               "not called as tracker.config.dsn expects: update it for this asyncpg")
    # Every argument but the DSN left unset (None), as asyncpg.connect(dsn) leaves them.
    return lambda dsn: parse(**{n: None for n in required}, dsn=dsn)


def _parse(dsn: str) -> Any:
    """asyncpg's own reading of ``dsn`` (addresses, parameters, ...), as asyncpg.connect's."""
    with warnings.catch_warnings():  # e.g. a passfile readable by others: run warns again
        warnings.simplefilter("ignore")
        return _parser()(dsn)


def asyncpg_refusal(dsn: str) -> str | None:
    """Why asyncpg would refuse to connect with ``dsn`` (its own words, which may hold parts of
    the DSN), or None if it takes it. Reads what asyncpg.connect reads too: PG* environment
    variables, a passfile, SSL certificate files. Nothing is connected to."""
    try:
        _parse(dsn)
    except (ValueError, OSError) as e:  # ClientConfigurationError is a ValueError
        return " ".join(str(e).split()) or type(e).__name__
    except TypeError as e:
        raise DsnParserChanged(f"asyncpg.connect_utils.{_PARSER_NAME} refused its arguments ({e}): "
                               "update tracker.config.dsn for this asyncpg") from e
    return None


def asyncpg_target(dsn: str) -> str | None:
    """host:port of each address asyncpg would try (or its socket file), and the database, as
    asyncpg's own parser reads ``dsn``; None if it refuses it. Holds no user or password, but
    read from a DSN whose password moved the host, it may hold a piece of that password: show
    only what it reads from the DSN with its passwords hidden (report.dsn_target)."""
    try:
        addrs, params = _parse(dsn)[:2]
    except Exception:  # noqa: BLE001 - a reading, not a check: dsn_problem says what is wrong
        return None
    shown = [a if isinstance(a, str) else f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
             for a in addrs]
    return f"{','.join(shown)}/{params.database}"


def _password_misread(dsn: str, hidden: str) -> str | None:
    """A character of the password, unencoded, makes asyncpg read the URL otherwise than meant:
    an "@" (the netloc holds more than one), any character that moves asyncpg's hosts, ports
    or database away from what it reads with the password hidden ("/"), or a "?" or "#" that
    ends the netloc before the userinfo's "@" where asyncpg then refuses the URL (it reads the
    password's head as a port)."""
    try:
        if urlsplit(dsn).netloc.count("@") > 1:
            return _MISREADS
    except ValueError:
        pass  # an unbalanced "[": asyncpg's parser says what is wrong
    if hidden != dsn:
        target = asyncpg_target(dsn)
        if target != asyncpg_target(hidden):
            return _MISREADS if target is not None else _CANNOT_PARSE
    rest = dsn.partition("://")[2]
    authority = rest.split("/", 1)[0]  # as written: up to the path, whatever ? or # it holds
    cut = min((i for i in (authority.find("?"), authority.find("#")) if i != -1), default=-1)
    if cut != -1 and "@" in authority[cut:] and (not _ports_ok(hidden) or asyncpg_refusal(dsn)):
        return _CANNOT_PARSE
    return None


def _ports_ok(url: str) -> bool:
    """Each host's port in the URL (``host1:5432,host2:5433``), if given, is in 1..65535
    (asyncpg takes 0 and 99999, and fails only when connecting)."""
    try:
        netloc = urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return True  # asyncpg's parser says what is wrong
    for spec in netloc.split(","):
        _, colon, port = spec.rpartition(":") if not spec.endswith("]") else ("", "", "")
        if colon and port and not (port.isdigit() and 0 < int(port) <= 65535):
            return False
    return True


def dsn_problem(dsn: str) -> str | None:
    """Why ``dsn`` cannot be used, for a problem of ``database.dsn``, or None. Never holds the
    password: asyncpg's reason is given only if the DSN with its password hidden draws the same
    reason (else the password's own characters are what it stumbled on)."""
    if any(c < " " or c == "\x7f" for c in dsn):  # a dsn_file's second line, a stray tab
        return "it holds a line break or another control character"
    if "://" not in dsn and _KEY_VALUE.match(dsn):
        return (f"a libpq key=value string is not accepted (asyncpg, which the tracker connects "
                f"with, takes only URLs): write it as {URL_FORM}")
    hidden = redact_dsn(dsn)
    misread = _password_misread(dsn, hidden) if _URL.match(dsn) else None
    if misread:
        return misread
    if _URL.match(hidden) and not _ports_ok(hidden):
        return "the URL's port is not a number in 1..65535"
    reason = asyncpg_refusal(dsn)
    if reason is None:
        return None
    if hidden != dsn and asyncpg_refusal(hidden) != reason:
        return _CANNOT_PARSE
    # asyncpg quotes the values it stumbles on, and may have split a password itself to find
    # them (one holding "&" or "?": "bad query field: 'tail-of-the-password'"): a quoted piece
    # of what follows the scheme goes (the scheme and asyncpg's own words stay)
    rest = dsn.partition("://")[2] or dsn
    reason = _QUOTED.sub(lambda m: "'…'" if m[0][1:-1] in rest else m[0], reason)
    for secret in sorted(dsn_passwords(dsn), key=len, reverse=True):  # belt and braces
        if len(secret) >= 4:  # shorter ones would mangle the words around them
            reason = reason.replace(secret, MASK)
    return f"asyncpg refuses it: {redact_dsn(reason)}"
