"""The password in a vendor's URL (vendors.<v>.base_url = http://user:password@host, sent as
basic auth; status_url; Twilio's public_base_url, sent as the callback URL) is a secret the
vendor is given (tracker.config.redaction.vendor_secrets_of): masked wherever the vendor echoes
it, in logs and stored rows, as written and percent-decoded, as its api_key is."""
from __future__ import annotations

import pytest

from tracker import logging as tlog
from tracker.config import load
from tracker.config.redaction import secrets_of, vendor_secrets_of
from tracker.masking import mask_secrets

pytestmark = pytest.mark.usefixtures("no_secrets_registered")

SPARROW = {"TRACKER_VENDORS__SPARROW__API_TOKEN": "sparrow-api-token-1",
           "TRACKER_VENDORS__SPARROW__PARTNER_TOKEN": "sparrow-partner-token-1"}


def test_a_base_url_password_is_masked_where_the_vendor_echoes_it():
    cfg = load(None, env={**SPARROW,
                          "TRACKER_VENDORS__SPARROW__BASE_URL": "http://basicuser:BASICpwSECRET42@127.0.0.1:18099"})
    assert "BASICpwSECRET42" in vendor_secrets_of(cfg)
    said = "account error 401: basicuser:BASICpwSECRET42 refused, key sparrow-api-token-1"
    assert tlog.scrub(said) == "account error 401: basicuser:*** refused, key ***"
    assert mask_secrets(said, stored=True) == "account error 401: basicuser:*** refused, key ***"


def test_every_url_setting_gives_its_password_raw_and_decoded():
    cfg = load(None, env={
        **SPARROW,
        "TRACKER_VENDORS__SPARROW__BASE_URL": "https://u:pw%40sparrow%2F1@sparrow.example.com",
        "TRACKER_VENDORS__SPARKSENDER__STATUS_URL": "https://s:status-pw-22@st.example.com/api/getStatus/",
        "TRACKER_VENDORS__TWILIO__PUBLIC_BASE_URL": "https://t:twilio-pub-pw-33@pub.example.com/cb",
    })
    found = set(vendor_secrets_of(cfg))
    assert {"pw%40sparrow%2F1", "pw@sparrow/1", "status-pw-22", "twilio-pub-pw-33"} <= found
    assert found <= set(secrets_of(cfg))
    for echoed in ("pw@sparrow/1", "pw%40sparrow%2F1", "status-pw-22", "twilio-pub-pw-33"):
        assert mask_secrets(f"echo: {echoed}.", stored=True) == "echo: ***."
    # a URL without a password gives none; its user name is no secret
    cfg = load(None, env={**SPARROW, "TRACKER_VENDORS__SPARROW__BASE_URL": "https://user-only@sparrow.example.com"})
    assert not any("user-only" in s for s in vendor_secrets_of(cfg))
