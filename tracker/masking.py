"""Registered secrets (tracker.config registers every configured one) masked wherever text leaves
the daemon: every one in logs (tracker.logging's scrub and redaction); those the vendors are sent
(their keys and tokens, our postback URLs' tokens) in the rows it stores too (tracker.db.rows: a
vendor's answer that echoes our key). Only those: a DSN's password ("tracker", on a developer's
machine) masked in vendors' data would rewrite a host name or a word. A secret is masked where it
stands whole, not inside a longer run of letters and digits: a numeric key inside a longer number
is another number (masked, the data was damaged and, compared with its copy, told the key's
digits). A text cut short that ends in the start of a secret has that start masked too, unless
that start is a public word (a vendor's name, which a token may begin with). A secret
fetched at run time (a login token) is rotated: its last few values masked, older ones forgotten.
The usual text holds none: one search.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

MASK = "***"
MIN_SECRET_LEN = 4  # shorter "secrets" would mangle every log line; they are no secret anyway
# A text cut short (vendor words are cut to 200 characters, say) may end in the start of a secret:
# that start is masked too, from this many characters on.
CUT_SECRET_MIN_LEN = 6
# A rotated secret's values still masked: an answer to a request sent with one may come back
# after the next login.
ROTATED_KEPT = 3

_secrets: set[str] = set()  # every one: masked in logs
_secret_re: re.Pattern[str] | None = None
_sent: set[str] = set()  # of which the vendors are sent: masked in stored rows too
_sent_re: re.Pattern[str] | None = None
_fixed: set[str] = set()  # registered for good (register_secret): never forgotten
# Words anyone may read (the vendors' names): a text ending in one is no secret's start cut
# short, even where a secret starts with it (an auth token "twilio-secondary-..." masked every
# log line's "vendor": "twilio"); showing it tells nothing.
_public: set[str] = set()
_rotating: dict[str, list[str]] = {}  # a rotated secret's slot: its last values, oldest first

# Where a secret's letter or digit edge may stand: not against another letter or digit (that is
# a longer word or number), but after an escape, as after the character it stands for ("%20" in
# a URL, "\n" in JSON text). An edge that is no letter or digit ("/" of a URL path) needs none.
_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_BEFORE = (r"(?:(?<![0-9A-Za-z])|(?<=%[0-9A-Fa-f]{2})|(?<=\\[nrtbf])"
           r"|(?<=\\u[0-9A-Fa-f]{4}))")
_AFTER = r"(?![0-9A-Za-z])"
_may_start = re.compile(_BEFORE)


def _whole(secret: str) -> str:
    """A regex matching `secret` where it stands whole (see _BEFORE)."""
    rx = re.escape(secret)
    return (_BEFORE if secret[0] in _WORD else "") + rx + (_AFTER if secret[-1] in _WORD else "")


def _any_of(secrets: set[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    return re.compile("|".join(_whole(s) for s in sorted(secrets, key=len, reverse=True)))


def _forms(value: str) -> set[str]:
    """`value` and the forms an echo of it takes: upper or lower case (a vendor that normalises
    what it repeats), percent-encoded (a URL, a form body), with `/` escaped as PHP's JSON writes
    it. Each is masked as a secret of its own: only the exact bytes were."""
    return {value, value.upper(), value.lower(), quote(value, safe=""), quote_plus(value),
            value.replace("/", "\\/")}


def _add(value: str | None, sent: bool) -> bool:
    """Mask `value` from now on (False: too short to be a secret)."""
    global _secret_re, _sent_re
    if not value or len(value) < MIN_SECRET_LEN:
        return False
    forms = _forms(value)
    if not forms <= _secrets:
        _secrets.update(forms)
        _secret_re = _any_of(_secrets)
    if sent and not forms <= _sent:
        _sent.update(forms)
        _sent_re = _any_of(_sent)
    return True


def register_secret(value: str | None, *, sent: bool = False) -> None:
    """Mask ``value`` wherever it appears in any logged string from now on; ``sent`` (a vendor
    is sent it, so may echo it): in the rows stored too (tracker.db.rows)."""
    if value and _add(value, sent):
        _fixed.add(value)


def register_public(*words: str) -> None:
    """Words never masked as a secret's start (a vendor's name): see _public."""
    _public.update(words)


def rotate_secret(slot: str, value: str | None, *, sent: bool = False) -> None:
    """``value`` is the newest of a secret replaced as time goes (``slot``: a vendor's login
    token, say): masked as register_secret() masks, with the slot's ROTATED_KEPT - 1 values
    before it; older ones are forgotten (unless registered otherwise), so that years of
    refreshes never grow the secrets every text is searched for."""
    global _secret_re, _sent_re
    if not value or len(value) < MIN_SECRET_LEN:
        return
    kept = [v for v in _rotating.get(slot, []) if v != value] + [value]
    _rotating[slot] = kept[-ROTATED_KEPT:]
    gone = {v for v in kept[:-ROTATED_KEPT] if v not in _fixed} - {
        v for k in _rotating.values() for v in k}
    forms = _forms(value)
    if forms <= _secrets and (forms <= _sent or not sent) and not gone:
        return  # nothing changes
    still = set().union(*map(_forms, _fixed), *(_forms(v) for k in _rotating.values() for v in k))
    gone_forms = set().union(*map(_forms, gone)) - still
    _secrets.difference_update(gone_forms)
    _secrets.update(forms)
    _sent.difference_update(gone_forms)
    if sent:
        _sent.update(forms)
    _secret_re, _sent_re = _any_of(_secrets), _any_of(_sent)


def _alternation(words: list[str]) -> str:
    """A regex matching any of `words` (escaped), as a trie: (?:ab(?:c|d)|x...). Python's re
    tries an alternation's branches one by one at every place; merged by common start, it tries
    each first character once."""
    trie: dict[str, dict] = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}  # a word ends here

    def rx(node: dict[str, dict]) -> str:
        if not node:
            return "(?!)"  # no word at all: matches nothing
        branches = [re.escape(c) + rx(sub) for c, sub in sorted(node.items()) if c]
        if "" in node:  # a word ends here: the longer ones need no looking for (any will do)
            return ""
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return rx(trie)


# Characters by how often they come in vendors' answers and words (JSON punctuation, digits,
# lowercase letters as in English text, ...), most often first; any other counts as rarer still.
_COMMON_CHARS = '" :,0123456789etaoinsrhldcumfpgwybv._-/kxjqzTZ'
_RANK = {c: i for i, c in enumerate(_COMMON_CHARS)}
_ANCHOR_MIN_LEN = 3


def _anchor(secret: str) -> str:
    """What a search for `secret` looks for: a piece of its first CUT_SECRET_MIN_LEN characters
    (so that a start of it cut short has it too) that starts with the rarest character there,
    at least _ANCHOR_MIN_LEN long. Python's re tries a match at every place the text has a
    first character of the pieces searched for: a rare one makes those places few."""
    head = secret[:CUT_SECRET_MIN_LEN]
    starts = range(max(1, len(head) - _ANCHOR_MIN_LEN + 1))
    i = max(starts, key=lambda i: (_RANK.get(head[i], len(_RANK)), -i))
    return head[i:]


class _Masks:
    """What masking needs, made from the registered secrets (`_secrets`, `_secret_re`) when
    they change. A text with none of the secrets' anchors (_anchor) holds neither a secret nor
    the start of one that ends it, which one search tells: the usual text costs that search."""

    __slots__ = ("full", "anchor", "head_at", "json_anchor", "secrets", "longest")

    def __init__(self, full: re.Pattern[str], secrets: set[str]) -> None:
        self.full = full
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))
        self.longest = max(map(len, secrets), default=0)
        anchors = sorted({_anchor(s) for s in secrets})
        self.anchor = re.compile(_alternation(anchors))
        heads = sorted({s[:CUT_SECRET_MIN_LEN] for s in secrets})
        self.head_at = re.compile(f"(?={_alternation(heads)})")  # every place one may start
        # ... and as JSON writes them inside a string. orjson escapes character by character (the
        # quote, the backslash and control characters; nothing else), so a string holding an
        # anchor holds its escaped form once encoded. A secret orjson cannot encode (a lone
        # surrogate) is in no JSON it writes. (Latin-1 keeps each byte one character: a trie of
        # the bytes.)
        # A raw body (mask_secrets_in_bytes) holds them as sent: unescaped too (a vendor's "\/").
        escaped = set()
        for a in anchors:
            with contextlib.suppress(orjson.JSONEncodeError):
                escaped.add(orjson.dumps(a)[1:-1].decode("latin-1"))
            with contextlib.suppress(UnicodeEncodeError):
                escaped.add(a.encode("utf-8").decode("latin-1"))
        self.json_anchor = (re.compile(_alternation(sorted(escaped)).encode("latin-1"))
                            if escaped else None)


_made: dict[bool, _Masks] = {}  # stored (the secrets sent) or not (every one): its masks


def _masks(stored: bool) -> _Masks | None:
    """The masks for the secrets registered now, every one or those sent (None: none)."""
    full, secrets = (_sent_re, _sent) if stored else (_secret_re, _secrets)
    if full is None:
        return None
    m = _made.get(stored)
    if m is None or m.full is not full:  # registered since (or swapped by a test): made again
        m = _made[stored] = _Masks(full, secrets)
    return m


def mask_secrets(text: str, *, stored: bool = False, cut: bool = True) -> str:
    """``text`` with every registered secret masked (``stored``: those sent to vendors), and,
    ``cut`` (a text that may have been cut short, at any length: a code cut to 100
    characters, say), the start of one (CUT_SECRET_MIN_LEN characters or more) that ends it. Each where it stands
    whole (_BEFORE). Only registered secrets: credential-looking parts are scrub()'s."""
    m = _masks(stored)
    if m is None:
        return text
    if m.anchor.search(text) is None:
        return text
    text = m.full.sub(MASK, text)
    if not cut:
        return text
    for at in m.head_at.finditer(text, max(0, len(text) - m.longest + 1)):  # earliest first
        i = at.start()
        rest = text[i:]
        if len(rest) < CUT_SECRET_MIN_LEN:
            break
        if rest[0] in _WORD and not _may_start.match(text, i):  # inside a longer word or number
            continue
        if rest in _public:
            continue
        if any(len(s) > len(rest) and s.startswith(rest) for s in m.secrets):
            return text[:i] + MASK
    return text


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, "..." ending it, the start of a secret left at the
    cut masked first: behind the "...", mask_secrets would no longer see it end the text."""
    if len(text) <= limit:
        return text
    return mask_secrets(text[:limit - 3]) + "..."


def may_hold_stored_secrets(*texts: str | None) -> bool:
    """Whether any of ``texts`` may hold a secret sent to vendors or the start of one (False:
    mask_secrets(stored=True) would give each back as it is), in one search."""
    m = _masks(True)
    return m is not None and m.anchor.search("\0".join(t for t in texts if t)) is not None


def mask_secrets_in_json(data: bytes) -> bytes:
    """JSON text (as orjson writes it) with the secrets sent to vendors masked in every string
    (keys too), as mask_secrets() does, and every number that is one (a numeric key echoed:
    then a string); still valid JSON. ``data`` itself when none holds one (nor the start of
    one): one search."""
    m = _masks(True)
    if m is None or m.json_anchor is None or m.json_anchor.search(data) is None:
        return data
    return orjson.dumps(_mask_values(orjson.loads(data)))


def mask_secrets_in_bytes(data: bytes) -> bytes:
    """A request's raw body as stored (JSON, a form, XML: any text) with the secrets sent to
    vendors masked where they stand whole; ``data`` itself when none is in it: one search."""
    m = _masks(True)
    if m is None or m.json_anchor is None or m.json_anchor.search(data) is None:
        return data
    text = data.decode("utf-8", "surrogateescape")  # bytes that are no UTF-8 kept as they are
    masked = mask_secrets(text, stored=True, cut=False)
    return data if masked is text else masked.encode("utf-8", "surrogateescape")


def _mask_values(value: Any) -> Any:
    """A payload, masked: its strings as any text (an adapter may keep words it cut short in
    it); its keys by whole secrets only (never cut: a key's first digits are no leak); a number
    only when it is a secret (then a string), never a part of it; two keys masked alike both
    kept."""
    if isinstance(value, str):
        return mask_secrets(value, stored=True)
    if isinstance(value, list):
        return [_mask_values(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = mask_secrets(k, stored=True, cut=False)
            while key in out:  # two keys masked alike: both kept
                key += "*"
            out[key] = _mask_values(v)
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # an integral float too: 12345678.0 is the key 12345678 echoed by a JavaScript vendor
        whole = isinstance(value, int) or value.is_integer()
        return MASK if (str(int(value)) if whole else orjson.dumps(value).decode()) in _sent else value
    return value
