"""The chaos fuzz scenario's generator (bench/_chaos/fuzz_gen.py) says of each Twilio callback
whether its signature verifies; the scenario keeps only requests it expects refused on that
word. Checked here against the tracker's own verifier, so that a generator that signed wrongly
cannot make the scenario pass by sending nothing that reaches the parser."""
from __future__ import annotations

import collections
import random
import sys
from pathlib import Path

from multidict import CIMultiDict

from tracker.adapters.base import PostbackRequest
from tracker.adapters.twilio_signature import verify_postback
from tracker.config_types import VendorConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _chaos import fuzz_gen  # noqa: E402

TOKENS = {v: f"{v}-token" for v in fuzz_gen.PUSHERS}
REFS = fuzz_gen.Refs(["ref1"], ["SMS20261201T000000-1234-0001"],
                     [("5d7c1f6e-0000-4000-8000-00000000ffff", "9779800000001")], ["SM" + "1" * 32])


def test_twilio_callbacks_are_signed_as_the_generator_says() -> None:
    signer = fuzz_gen.Signer("http://127.0.0.1:8080", "the-auth-token")
    config = VendorConfig(name="twilio", settings={"auth_token": signer.auth_token})
    rng, kinds = random.Random(7), collections.Counter()
    while sum(kinds.values()) < 2000:
        p = fuzz_gen.postback(rng, REFS, TOKENS, 65536, signer)
        if p.vendor != "twilio" or p.kind in fuzz_gen.BEFORE_PARSING:
            continue
        url = signer.url("twilio", p.token, p.query)
        verifies = bool(verify_postback(config, PostbackRequest(p.method, url, CIMultiDict(p.headers), p.body)))
        assert verifies == p.signed, p
        assert not fuzz_gen.parses(p), p  # what the scenario keeps is refused
        kinds[(p.kind, verifies)] += 1
    # both ways of refusal are drawn: by signature (403), and signed but unreadable (400)
    assert {k for k, ok in kinds if not ok} >= {"signature missing", "signature of another body",
                                                 "signature over another URL", "invalid UTF-8"}
    assert {k for k, ok in kinds if ok} == {"no sid", "blank sid", "no status"}


def test_a_valid_twilio_callback_is_read_when_signed() -> None:
    """The body the mutations start from is one the adapter reads (else they would prove little)."""
    body, ctype = fuzz_gen.valid(random.Random(1), "twilio", REFS)
    p = fuzz_gen.Postback("valid", "POST", "twilio", "t", ctype, body, signed=True)
    assert fuzz_gen.parses(p)
