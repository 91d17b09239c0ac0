"""A message's destination: its country (ISO 3166 code) and calling code, from the recipient's
digits read as an international number (with phonenumbers). Pure.

Campaigns send to a few number ranges many times over, so the answer is cached by the number's
leading digits (the calling code and five more: enough for every region split phonenumbers
knows, such as NANP area codes and the Channel Islands inside +44), so that intake pays about a
dictionary lookup per message rather than a parse.
"""
from __future__ import annotations

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

UNKNOWN: tuple[str | None, int | None] = (None, None)
_NON_GEOGRAPHIC = "001"


def destination(recipient: str | None) -> tuple[str | None, int | None]:
    """(country, calling code) of a recipient's digits (as the adapters give them: digits only,
    international, no '+'); (None, None) when they do not read as a phone number."""
    if not recipient or not recipient.isdigit() or not 7 <= len(recipient) <= 15:
        return UNKNOWN
    for n in (1, 2, 3):
        code = int(recipient[:n])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return UNKNOWN
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    if len(regions) == 1 and regions[0] != _NON_GEOGRAPHIC:
        return regions[0], code
    prefix = recipient[:n + 5]
    found = _by_prefix.get(prefix)
    if found is None:
        if len(_by_prefix) >= _CACHE_MAX:
            _by_prefix.clear()
        found = _by_prefix[prefix] = _parse(recipient)
    return found


_CACHE_MAX = 100_000
_by_prefix: dict[str, tuple[str | None, int | None]] = {}


def _parse(recipient: str) -> tuple[str | None, int | None]:
    """Regions sharing a calling code: phonenumbers decides by the leading digits (the first
    number seen with a prefix stands for the rest of it)."""
    try:
        number = phonenumbers.parse("+" + recipient, None)
    except phonenumbers.NumberParseException:
        return UNKNOWN
    region = phonenumbers.region_code_for_number(number)
    if not region or region == _NON_GEOGRAPHIC:
        return None, number.country_code
    return region, number.country_code
