"""A secret fetched at run time and replaced as time goes (Sparrow's login token: tracker.poller
.client.TokenCache) is masked as a configured one is, in logs and stored rows; its last few
values stay masked (an answer to a request sent with one may come after the next login), older
ones are forgotten: years of refreshes never grow the secrets searched for."""
from __future__ import annotations

import pytest

from tracker import logging as tlog
from tracker import masking
from tracker.masking import ROTATED_KEPT, mask_secrets, rotate_secret

SLOT = "sparrow login token"


@pytest.fixture(autouse=True)
def nothing_registered(monkeypatch):
    for name, empty in (("_secrets", set()), ("_secret_re", None), ("_sent", set()), ("_sent_re", None),
                        ("_fixed", set()), ("_rotating", {})):
        monkeypatch.setattr(masking, name, empty)


def forms(values) -> set[str]:
    return set().union(*map(masking._forms, values))


def token(i: int) -> str:
    return f"SPRjwtSESSIONSECRET_{i:05d}_xyz"


def test_a_rotated_secret_is_masked_in_logs_and_rows():
    rotate_secret(SLOT, token(1), sent=True)
    said = f"expired session {token(1)}, log in again"
    assert tlog.scrub(said) == "expired session ***, log in again"
    assert mask_secrets(said, stored=True) == "expired session ***, log in again"


def test_the_last_values_stay_masked_and_older_ones_are_forgotten():
    for i in range(1, 11):
        rotate_secret(SLOT, token(i), sent=True)
    for i in range(1, 11):
        masked = mask_secrets(token(i)) == "***" and mask_secrets(token(i), stored=True) == "***"
        assert masked == (i > 10 - ROTATED_KEPT), i
    assert masking._secrets == masking._sent == forms(token(i) for i in range(11 - ROTATED_KEPT, 11))


def test_refreshes_keep_the_secrets_bounded():
    tlog.register_secret("configured-api-token", sent=True)
    for i in range(100):  # as many as you like: never more than ROTATED_KEPT each
        rotate_secret(SLOT, token(i), sent=True)
        rotate_secret("other login token", f"other-{i}", sent=True)
    kept = ["configured-api-token", *(v for k in masking._rotating.values() for v in k)]
    assert len(kept) == 1 + 2 * ROTATED_KEPT
    assert masking._secrets == masking._sent == forms(kept)  # each with its echoed forms
    assert mask_secrets("configured-api-token") == "***"


def test_a_value_registered_for_good_or_still_kept_elsewhere_is_not_forgotten():
    tlog.register_secret(token(0))  # the same value configured (logs only)
    rotate_secret("other login token", token(1), sent=True)
    for i in range(ROTATED_KEPT + 2):
        rotate_secret(SLOT, token(i), sent=True)
    assert masking._rotating[SLOT] == [token(i) for i in range(2, ROTATED_KEPT + 2)]
    assert mask_secrets(token(0)) == "***"
    assert mask_secrets(token(1)) == "***"  # still the other slot's newest
    # a value given again is the newest, not a second copy
    rotate_secret(SLOT, token(2), sent=True)
    assert masking._rotating[SLOT] == [token(i) for i in range(3, ROTATED_KEPT + 2)] + [token(2)]


def test_a_value_too_short_to_be_a_secret_is_not_kept():
    rotate_secret(SLOT, "abc", sent=True)
    rotate_secret(SLOT, None, sent=True)
    assert masking._rotating == {} and masking._secrets == set()
