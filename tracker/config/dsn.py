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


def asyncpg_refusal(dsn: str) -> str | None:
    """Why asyncpg would refuse to connect with ``dsn`` (its own words, which may hold parts of
    the DSN), or None if it takes it. Reads what asyncpg.connect reads too: PG* environment
    variables, a passfile, SSL certificate files. Nothing is connected to."""
    parse = _parser()
    try:
        with warnings.catch_warnings():  # e.g. a passfile readable by others: run warns again
            warnings.simplefilter("ignore")
            parse(dsn)
    except (ValueError, OSError) as e:  # ClientConfigurationError is a ValueError
        return " ".join(str(e).split()) or type(e).__name__
    except TypeError as e:
        raise DsnParserChanged(f"asyncpg.connect_utils.{_PARSER_NAME} refused its arguments ({e}): "
                               "update tracker.config.dsn for this asyncpg") from e
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
    if "://" not in dsn and _KEY_VALUE.match(dsn):
        return (f"a libpq key=value string is not accepted (asyncpg, which the tracker connects "
                f"with, takes only URLs): write it as {URL_FORM}")
    hidden = redact_dsn(dsn)
    if _URL.match(hidden) and not _ports_ok(hidden):
        return "the URL's port is not a number in 1..65535"
    reason = asyncpg_refusal(dsn)
    if reason is None:
        return None
    if hidden != dsn and asyncpg_refusal(hidden) != reason:
        return ("asyncpg cannot parse the URL because of a character in its password (hidden): "
                "percent-encode the password's / ? # @ : [ ] and spaces (e.g. / as %2F), "
                f"as in {URL_FORM}")
    # asyncpg quotes the values it stumbles on, and may have split a password itself to find
    # them (one holding "&" or "?": "bad query field: 'tail-of-the-password'"): a quoted piece
    # of what follows the scheme goes (the scheme and asyncpg's own words stay)
    rest = dsn.partition("://")[2] or dsn
    reason = _QUOTED.sub(lambda m: "'…'" if m[0][1:-1] in rest else m[0], reason)
    for secret in sorted(dsn_passwords(dsn), key=len, reverse=True):  # belt and braces
        if len(secret) >= 4:  # shorter ones would mangle the words around them
            reason = reason.replace(secret, MASK)
    return f"asyncpg refuses it: {redact_dsn(reason)}"
