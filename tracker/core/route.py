"""A message's destination: its country (ISO 3166 code) and calling code, from the recipient's
digits read as an international number (with phonenumbers). Pure.

Campaigns send to a few number ranges many times over, so the answer is cached by the number's
leading digits (the calling code and five more: enough for every region split phonenumbers
knows, such as NANP area codes and the Channel Islands inside +44) and its length, so that
intake pays about a dictionary lookup per message rather than a parse.
"""
from __future__ import annotations

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

UNKNOWN: tuple[str | None, int | None] = (None, None)
_NON_GEOGRAPHIC = "001"


def destination(recipient: str | None) -> tuple[str | None, int | None]:
    """(country, calling code) of a recipient's digits (as the adapters give them: digits only,
    international, no '+'); (None, None) when they do not read as a phone number, or not as one
    of its calling code's lengths."""
    if not recipient or not recipient.isdigit() or not 7 <= len(recipient) <= 15:
        return UNKNOWN
    for n in (1, 2, 3):
        code = int(recipient[:n])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return UNKNOWN
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    # One region: its calling code and the length decide all. Several: the leading digits too.
    lead = n if len(regions) == 1 and regions[0] != _NON_GEOGRAPHIC else n + 5
    key = (recipient[:lead], len(recipient))
    found = _by_prefix.get(key)
    if found is None:
        if len(_by_prefix) >= _CACHE_MAX:
            _by_prefix.clear()
        found = _by_prefix[key] = _parse(recipient)
    return found


_CACHE_MAX = 100_000
_by_prefix: dict[tuple[str, int], tuple[str | None, int | None]] = {}


def _parse(recipient: str) -> tuple[str | None, int | None]:
    """phonenumbers decides the region by the leading digits, and whether the number has a
    length its region's numbers have: the first number seen with a prefix and a length stands
    for the rest of them. A length no number of the region has is a number written in national
    form (a US number without its 1, read as +41, Switzerland): no country, not a guessed one."""
    try:
        number = phonenumbers.parse("+" + recipient, None)
    except phonenumbers.NumberParseException:
        return UNKNOWN
    if not phonenumbers.is_possible_number(number):
        return UNKNOWN
    region = phonenumbers.region_code_for_number(number)
    if not region or region == _NON_GEOGRAPHIC:
        return None, number.country_code
    return region, number.country_code
