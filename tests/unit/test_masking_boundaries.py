"""A registered secret is masked where it stands whole (tracker.masking): never inside a longer
run of letters and digits, which is another value (a numeric postback token inside a longer
number turned an integer id into "9***" and, compared with the postback kept as received, told
the token's digits); a number in a payload only when it is the secret; the start of a secret
only at the end of a text long enough to have been cut."""
from __future__ import annotations

import contextlib
import string

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker import logging as tlog
from tracker import masking
from tracker.masking import mask_secrets, mask_secrets_in_bytes, mask_secrets_in_json

TOKEN = "4711223344556677"  # engageSPARK's postback token, as planted by the audit
# The postback body the audit sent: every number holds the token's digits, none is the token.
BODY = {"id": 94711223344556677, "recipient": "+947112233445566770",
        "deliveryError": "carrier ref 14711223344556677990", "note": "batch 88471122"}


@contextlib.contextmanager
def registered(*secrets: str):
    """Only `secrets` registered (sent to vendors), for one example; the ones before restored."""
    names = ("_secrets", "_secret_re", "_sent", "_sent_re", "_fixed", "_rotating")
    before = {n: getattr(masking, n) for n in names}
    for n, empty in zip(names, (set(), None, set(), None, set(), {})):
        setattr(masking, n, empty)
    try:
        for s in secrets:
            tlog.register_secret(s, sent=True)
        yield
    finally:
        for n, v in before.items():
            setattr(masking, n, v)


def test_the_audits_postback_is_stored_and_logged_as_it_came():
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db.rows import observation_row, rows_json

    o = Observation(vendor="engagespark", vendor_ref="94711223344556677", recipient=BODY["recipient"],
                    state=State.failed, code="error", text=BODY["deliveryError"], event_at=None, raw=BODY)
    with registered(TOKEN):
        data = orjson.dumps(BODY)
        assert mask_secrets_in_json(data) == data  # the integer id stays an integer
        [row] = orjson.loads(rows_json([observation_row(o)]))
        assert row[4:6] == ["error", "carrier ref 14711223344556677990"] and row[10] == BODY
        assert tlog.scrub("from +94711223344556677") == "from +94711223344556677"
        assert tlog.scrub("from +4711223344556677") == "from +***"  # the token itself, after "+"


@pytest.mark.parametrize("text, masked", [
    (f"https://v.example/postbacks/{TOKEN}/x", "https://v.example/postbacks/***/x"),
    (f"GET /v1/{TOKEN}?k=1", "GET /v1/***?k=1"),
    (f"token={TOKEN}&a=1", "token=***&a=1"),
    (f'{{"token":"{TOKEN}"}}', '{"token":"***"}'),
    (f"bad%20key%3A{TOKEN}%20", "bad%20key%3A***%20"),  # escapes stand for a blank, a colon
    (f'"said:\\n{TOKEN}\\t"', '"said:\\n***\\t"'),  # JSON text's escapes
    (f'"\\u00a0{TOKEN}"', '"\\u00a0***"'),
    (f"{TOKEN}_{TOKEN}.", "***_***."),  # an underscore is no letter or digit
    (f"é{TOKEN}", "é***"),  # nor is a letter outside ASCII
    (f"x{TOKEN}", f"x{TOKEN}"), (f"{TOKEN}0", f"{TOKEN}0"), (f"A{TOKEN}b", f"A{TOKEN}b"),
])
def test_a_secret_is_masked_where_it_stands_whole(text, masked):
    with registered(TOKEN):
        assert mask_secrets(text) == masked
        assert mask_secrets(text, stored=True) == masked


def test_an_edge_that_is_no_letter_or_digit_needs_no_boundary():
    # A webhook URL's path is registered as a secret (tracker.sinks.described): it follows the
    # host's last letter, and may be followed by more path.
    with registered("/hooks/tok-8c1f2a9e", "-suffix-key-"):
        assert mask_secrets("https://hooks.example.com/hooks/tok-8c1f2a9e") == "https://hooks.example.com***"
        assert mask_secrets("https://h.example/hooks/tok-8c1f2a9e2") == "https://h.example/hooks/tok-8c1f2a9e2"
        assert mask_secrets("a-suffix-key-b") == "a***b"


def test_a_number_is_masked_only_when_it_is_the_secret():
    with registered(TOKEN):
        def masked(value):
            return orjson.loads(mask_secrets_in_json(orjson.dumps({"n": value, "t": TOKEN})))["n"]

        assert masked(4711223344556677) == "***"
        assert masked(4711223344556677.0) == "***"  # the same number, as JavaScript writes it
        for other in (94711223344556677, 47112233445566770, 471122334455667, -4711223344556677,
                      4711223344556677.5, 471122):
            assert masked(other) == other


def test_the_start_of_a_secret_ending_a_text_is_masked_where_it_stands_whole():
    with registered(TOKEN):
        assert mask_secrets("batch 471122") == "batch ***"  # the token's start: it may have been cut
        assert mask_secrets("batch 88471122") == "batch 88471122"  # another number's end
        assert mask_secrets("batch 47112") == "batch 47112"  # too little to tell
        assert mask_secrets("batch 471122", cut=False) == "batch 471122"


def test_a_cut_text_is_masked_whatever_its_length_and_however_often_the_secret_came():
    # A review found both let most of a token through into stored rows while a length rule
    # (only texts of 200 characters or more counted as cut) stood: a code cut to 100
    # characters, and a text cut to 200 that held the token whole once before (masked first,
    # it was shorter than 200).
    from tracker.adapters.base import text_of

    key = "Zq8Kx2Lm9Pw4Rt7Yv3BnC5Dq"
    with registered(key):
        code = ("Delivery refused by the upstream gateway: the account check failed for the API key "
                + key + " (HTTP 401)")[:100]
        assert key[:8] in code and mask_secrets(code, stored=True).endswith("API key ***")
        said = text_of(f"Invalid token {key}: tokens expire after 60 minutes; "
                       + "x" * 80 + f" Received Authorization: Token {key}")
        masked = mask_secrets(said, stored=True)
        assert key[:6] not in masked and masked.endswith("Token ***"), masked


# --- the law, for any secret ---------------------------------------------------------------

SECRET_CHARS = string.digits + string.ascii_uppercase
# Around it: no character a secret holds (so the text holds no other copy nor start of it), no
# "%" nor "\" (an escape before a secret stands for the character it escapes).
AROUND = st.text(st.characters(blacklist_characters=SECRET_CHARS + "%\\", blacklist_categories=("Cs",)))
secrets = st.text(SECRET_CHARS, min_size=masking.MIN_SECRET_LEN, max_size=24)
lower = st.sampled_from(string.ascii_lowercase)
apart = st.characters(blacklist_characters=string.ascii_letters + string.digits + "%\\",
                      blacklist_categories=("Cs",))


@given(secrets, AROUND, apart, apart, AROUND, st.booleans())
def test_a_secret_between_non_alphanumerics_is_always_masked(secret, left, before, after, right, pad):
    left = ("." * 200 if pad else "") + left  # a long text (cut) or a short one
    with registered(secret):
        for stored in (False, True):
            text = left + before + secret + after + right
            assert mask_secrets(text, stored=stored) == left + before + "***" + after + right
            assert mask_secrets(left + before + secret, stored=stored) == left + before + "***"
            assert mask_secrets(secret + after + right, stored=stored) == "***" + after + right


@given(secrets, AROUND, lower, st.booleans(), AROUND, st.booleans())
def test_a_secret_inside_a_longer_alphanumeric_run_is_never_masked(secret, left, glue, glue_left,
                                                                   right, pad):
    text = (("." * 200 if pad else "") + left
            + (glue + secret if glue_left else secret + glue) + right)
    with registered(secret):
        assert mask_secrets(text) == text and mask_secrets(text, stored=True) == text


@given(st.integers(min_value=1, max_value=99), st.integers(min_value=0, max_value=9),  # 64 bits
       st.sampled_from(["left", "right", "both"]))
def test_a_number_holding_the_secrets_digits_is_kept(left, right, where):
    digits = (str(left) if where != "right" else "") + TOKEN + (str(right) if where != "left" else "")
    data = orjson.dumps({"n": int(digits), "s": digits})
    with registered(TOKEN):
        assert mask_secrets_in_json(data) == data


@given(secrets, st.binary(max_size=8), AROUND, apart, apart, AROUND)
def test_a_raw_body_is_masked_as_its_text_and_keeps_bytes_that_are_no_utf8(secret, junk, left, before,
                                                                            after, right):
    """A postback's raw body as stored (any format; its bytes need not be UTF-8)."""
    with registered(secret):
        body = junk + (left + before + secret + after + right).encode()
        out = mask_secrets_in_bytes(body)
        assert out.endswith((before + "***" + after + right).encode())
        assert out == mask_secrets(body.decode("utf-8", "surrogateescape"), stored=True,
                                   cut=False).encode("utf-8", "surrogateescape")
        assert mask_secrets_in_bytes(left.encode()) == left.encode()  # none in it: as it came


def test_a_vendors_name_is_never_taken_for_a_secrets_start(monkeypatch):
    # An auth token "twilio-secondary-..." masked every log line's "vendor": "twilio" (and a
    # text ending in the name): the start of a secret cut short, as the rule read it. A public
    # word shown tells nothing; the secret itself, or a longer start of it, is still masked.
    monkeypatch.setattr(masking, "_public", {"twilio"})
    with registered("twilio-secondary-0123456789"):
        for stored in (False, True):
            assert mask_secrets("twilio", stored=stored) == "twilio"
            assert mask_secrets("refused by twilio", stored=stored) == "refused by twilio"
            assert mask_secrets("token twilio-sec", stored=stored) == "token ***"
            assert mask_secrets("twilio-secondary-0123456789 x", stored=stored) == "*** x"
        assert tlog.scrub("vendor twilio") == "vendor twilio"


def test_the_configured_vendors_are_the_public_words(monkeypatch):
    from tracker.config import load

    monkeypatch.setattr(masking, "_public", set())
    with registered():
        load(None, env={"TRACKER_VENDORS__TWILIO__AUTH_TOKEN": "twilio-secondary-0123456789"})
        assert {"twilio", "skycore"} <= masking._public
        assert tlog.scrub('"vendor": "twilio"') == '"vendor": "twilio"'
        assert tlog.scrub("twilio-secondary-0123456789") == "***"


def test_a_secret_echoed_in_another_case_or_encoding_is_masked_in_rows_and_logs():
    # A vendor echoing our key upper-cased, percent-encoded in a URL, form-encoded, or with its
    # "/" escaped as PHP's JSON writes it: only the exact bytes were masked, the rest stored in
    # failure reasons and raw bodies and sent on in every webhook event.
    key = "Ab+cd/Ef9GhIj=="
    with registered(key):
        for echo in ("AB+CD/EF9GHIJ==", "ab+cd/ef9ghij==", "Ab%2Bcd%2FEf9GhIj%3D%3D",
                     "Ab+cd\\/Ef9GhIj=="):
            said = f"invalid credential {echo} for account"
            assert mask_secrets(said, stored=True) == "invalid credential *** for account", echo
            assert tlog.scrub(said) == "invalid credential *** for account", echo
            body = b'{"error":"' + said.encode() + b'"}'  # the bytes as the vendor sent them
            assert mask_secrets_in_bytes(body) == b'{"error":"invalid credential *** for account"}', echo
        assert mask_secrets("invalid credential Ab+cd/Ef9GhIk== for account", stored=True).count("***") == 0


def test_a_secret_holding_a_space_is_masked_as_a_form_body_writes_it():
    # quote_plus writes a space as "+" (a form body, a query by a form's rules), quote as "%20":
    # a password with a space echoed in a form body was kept
    key = "pass phrase-0123"
    with registered(key):
        for echo in ("pass+phrase-0123", "pass%20phrase-0123"):
            assert mask_secrets(f"user=me&password={echo}&x=1", stored=True) == "user=me&password=***&x=1", echo
