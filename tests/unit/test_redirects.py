"""A vendor answering a redirect (never followed: the request carries credentials) is a transient
error that says where it points, host only (its path or query may carry a key): a base_url to
correct. Sparrow's login read one as an account error, "login refused", pointing the operator at
the credentials; the others said a bare "HTTP 301"."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tracker import adapters
from tracker.adapters.base import HttpResponse, MessageRef
from tracker.config_types import VendorConfig

NOW = datetime(2026, 12, 5, tzinfo=timezone.utc)
MOVED = HttpResponse(301, {"Location": "https://api.example.net/v2/x?api_key=SECRET"}, b"")


@pytest.mark.parametrize("vendor", [v for v in adapters.VENDORS if adapters.get(v).POLLS and v != "sparrow"])
def test_a_status_answer_redirecting_is_transient_and_names_the_host_only(vendor):
    r = adapters.get(vendor).parse_status([MOVED], [MessageRef("ref-1", "15550001111")], NOW)
    assert r.account_error is None and not r.observations
    assert r.transient_error == ("HTTP 301: the vendor redirects to https://api.example.net"
                                 " (not followed: check base_url)")


def test_a_sparrow_login_redirecting_is_no_refusal_of_the_credentials():
    login = adapters.for_config("sparrow", VendorConfig(name="sparrow")).parse_login(MOVED, NOW)
    assert login.account_error is None and login.token is None
    assert "redirects to https://api.example.net" in login.transient_error
    assert "SECRET" not in login.transient_error


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location,said", [
    ("/v2/x?api_key=SECRET", "elsewhere"),  # relative: its path and query may hold the key
    ("https://user:SECRET@api.example.net:8443/v2?api_key=SECRET", "https://api.example.net"),
    ("", "elsewhere")])
def test_a_redirects_message_holds_no_path_query_port_or_credentials(status, location, said):
    r = adapters.get("twilio").parse_status([HttpResponse(status, {"Location": location}, b"")],
                                            [MessageRef("ref-1")], NOW)
    assert r.transient_error == (f"HTTP {status}: the vendor redirects to {said}"
                                 " (not followed: check base_url)")
    assert "SECRET" not in r.transient_error and "user" not in r.transient_error
