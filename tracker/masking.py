"""Registered secrets (tracker.config registers every configured one) masked wherever text leaves
the daemon: in logs (tracker.logging's scrub and redaction) and in the rows it stores
(tracker.db.rows: a vendor's answer that echoes our key). A text cut short that ends in the start
of a registered secret has that start masked too. The usual text holds none, and costs one search.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

MASK = "***"
MIN_SECRET_LEN = 4  # shorter "secrets" would mangle every log line; they are no secret anyway
# A text cut short (vendor words are cut to 200 characters, say) may end in the start of a secret:
# that start is masked too, from this many characters on.
CUT_SECRET_MIN_LEN = 6

_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in any logged string from now on (and in the text
    of observations stored: tracker.db.rows)."""
    global _secret_re
    if not value or len(value) < MIN_SECRET_LEN or value in _secrets:
        return
    _secrets.add(value)
    alternatives = sorted(_secrets, key=len, reverse=True)
    _secret_re = re.compile("|".join(re.escape(s) for s in alternatives))


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
        escaped = []
        for a in anchors:
            try:
                escaped.append(orjson.dumps(a)[1:-1].decode("latin-1"))
            except orjson.JSONEncodeError:
                pass
        self.json_anchor = re.compile(_alternation(escaped).encode("latin-1")) if escaped else None


_masks: _Masks | None = None


def _masks_now() -> _Masks | None:
    """The masks for the secrets registered now (None: none registered)."""
    global _masks
    full = _secret_re
    if full is None:
        return None
    m = _masks
    if m is None or m.full is not full:  # registered since (or swapped by a test): made again
        m = _masks = _Masks(full, _secrets)
    return m


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret masked, and the start of one (CUT_SECRET_MIN_LEN
    characters or more) that ends it: what is left of a secret in a text cut short. Only
    registered secrets: credential-looking parts are scrub()'s."""
    m = _masks
    if m is None or m.full is not _secret_re:
        m = _masks_now()
        if m is None:
            return text
    if m.anchor.search(text) is None:
        return text
    text = m.full.sub(MASK, text)
    for at in m.head_at.finditer(text, max(0, len(text) - m.longest + 1)):  # earliest first
        rest = text[at.start():]
        if len(rest) < CUT_SECRET_MIN_LEN:
            break
        if any(len(s) > len(rest) and s.startswith(rest) for s in m.secrets):
            return text[:at.start()] + MASK
    return text


def may_hold_secrets(*texts: str | None) -> bool:
    """Whether any of ``texts`` may hold a registered secret or the start of one (False:
    mask_secrets would give each back as it is), in one search."""
    m = _masks
    if m is None or m.full is not _secret_re:
        m = _masks_now()
        if m is None:
            return False
    return m.anchor.search("\0".join(t for t in texts if t)) is not None


def mask_secrets_in_json(data: bytes) -> bytes:
    """JSON text (as orjson writes it) with registered secrets masked in every string (keys
    too), as mask_secrets() does; still valid JSON. ``data`` itself when none holds a secret
    (nor the start of one): one search, the usual case."""
    m = _masks
    if m is None or m.full is not _secret_re:
        m = _masks_now()
        if m is None:
            return data
    if m.json_anchor is None or m.json_anchor.search(data) is None:
        return data
    return orjson.dumps(_mask_strings(orjson.loads(data)))


def _mask_strings(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_mask_strings(v) for v in value]
    if isinstance(value, dict):
        return {mask_secrets(k): _mask_strings(v) for k, v in value.items()}
    return value
