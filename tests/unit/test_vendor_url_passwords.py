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


def test_a_key_is_masked_as_a_query_carries_it_percent_encoded():
    """Spark Sender's api_key travels in the status call's query, encoded (`+` as %2B, `/` as
    %2F): an answer echoing the request holds it so."""
    key = "Zk9+cA/xq=Secret7"
    cfg = load(None, env={**SPARROW, "TRACKER_VENDORS__SPARKSENDER__API_KEY": key})
    assert {"Zk9%2BcA%2Fxq%3DSecret7"} <= set(vendor_secrets_of(cfg)) <= set(secrets_of(cfg))
    echoed = '{"debug": "served /api/getStatus/?user_id=u1&api_key=Zk9%2BcA%2Fxq%3DSecret7&msg_id=1"}'
    assert mask_secrets(echoed, stored=True) == '{"debug": "served /api/getStatus/?user_id=u1&api_key=***&msg_id=1"}'
    assert "Secret7" not in tlog.scrub("refused: Zk9%2BcA%2Fxq%3DSecret7")


def test_basic_credentials_are_masked_as_the_header_carries_them():
    """Twilio's account SID and auth token, and a URL's user and password, are sent as Basic
    authorization: base64 of "user:password", which a vendor's error may echo."""
    cfg = load(None, env={
        **SPARROW,
        "TRACKER_VENDORS__TWILIO__ACCOUNT_SID": "AC1",
        "TRACKER_VENDORS__TWILIO__AUTH_TOKEN": "TwilioAuthSECRET9x",
        "TRACKER_VENDORS__SPARROW__BASE_URL": "http://basicuser:BASICpwSECRET42@127.0.0.1:18099",
    })
    twilio, url = "QUMxOlR3aWxpb0F1dGhTRUNSRVQ5eA==", "YmFzaWN1c2VyOkJBU0lDcHdTRUNSRVQ0Mg=="
    assert {twilio, url} <= set(vendor_secrets_of(cfg))
    for basic in (twilio, url):
        said = f"not found (request had Basic {basic})"
        assert mask_secrets(said, stored=True) == "not found (request had Basic ***)"
