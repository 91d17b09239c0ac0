"""tracker.http.request, without sockets: what `encode` makes of a request is read back by a real
HTTP/1.1 parser (httptools, the one the client reads answers with) as the same request, and
nothing a caller passes can add a header or a second request."""
from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.adapters.base import HttpRequest
from tracker.http.errors import TransportError
from tracker.http.request import encode


class Parsed:
    """httptools' callbacks, collected: every request the bytes hold."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def on_message_begin(self) -> None:
        self.requests.append({"url": b"", "headers": [], "body": b""})

    def on_url(self, url: bytes) -> None:
        self.requests[-1]["url"] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.requests[-1]["headers"].append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.requests[-1]["body"] += body


def parse(raw: bytes) -> tuple[list[dict], str]:
    seen = Parsed()
    parser = httptools.HttpRequestParser(seen)
    parser.feed_data(raw)
    return seen.requests, parser.get_method().decode()


def header(req: dict, name: str) -> list[str]:
    return [v for k, v in req["headers"] if k.lower() == name.lower()]


TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12)
VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)  # printable ASCII
FORM = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)


@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=st.lists(TOKEN, max_size=3),
       params=FORM, headers=st.dictionaries(TOKEN.map(lambda t: "X-" + t), VALUE, max_size=4).filter(
           lambda h: len({k.lower() for k in h}) == len(h)),  # one line a name (X-H and X-h are one)
       body=st.one_of(st.none(), FORM.map(lambda f: ("data", f)),
                      st.binary(max_size=200).map(lambda b: ("content", b)),
                      st.lists(st.integers(-2**63, 2**63 - 1), max_size=5).map(lambda j: ("json", {"ids": j}))))
@settings(max_examples=300)
def test_what_is_sent_parses_back_as_one_request_with_what_was_asked(method, path, params, headers, body):
    kind, value = body if body else (None, None)
    req = HttpRequest(method, "http://user:pa%40ss@h.example:8080/" + "/".join(path), params=params or None,
                      headers=headers or None, **({kind: value} if kind else {}))
    key, raw = encode(req, "ua/1")
    assert key == ("http", "h.example", 8080)
    [got], got_method = parse(raw)  # one request, never two
    assert got_method == method
    assert got["url"].decode().startswith("/" + "/".join(path))
    assert header(got, "Host") == ["h.example:8080"] and header(got, "User-Agent") == ["ua/1"]
    assert header(got, "Authorization") == ["Basic dXNlcjpwYUBzcw=="]  # user:pa@ss
    for name, v in headers.items():
        assert header(got, name) == [v.lstrip(" ")]  # the parser drops the spaces before a value
    assert int((header(got, "Content-Length") or ["0"])[0]) == len(got["body"])
    if kind == "content":
        assert got["body"] == value


@given(st.sampled_from(["\r", "\n", "\0", "\r\nX-Injected: 1"]), st.sampled_from(["header", "name", "path"]))
def test_a_request_that_would_split_is_refused(bad, where):
    url, headers = "http://h.example/x", {"X-A": "1"}
    if where == "header":
        headers = {"X-A": "1" + bad}
    elif where == "name":
        headers = {"X-A" + bad: "1"}
    else:
        url = "http://h.example/x" + bad + "y"
    try:
        _, raw = encode(HttpRequest("GET", url, headers=headers), "ua/1")
    except TransportError as e:
        assert str(e) in ("invalid request", "unsupported URL")
        return
    # urlsplit drops CR, LF and tab from a URL (Python's fix for bpo-43882): then it is one
    # request to another path, never a second request or another header.
    [got], _ = parse(raw)
    assert header(got, "X-Injected") == [] and header(got, "X-A") == ["1"]


def test_the_callers_headers_win_and_a_body_has_its_length():
    _, raw = encode(HttpRequest("POST", "https://h.example/p", headers={"Content-Type": "text/plain",
                                                                       "accept": "application/json"},
                                content=b"as it is"), "ua/1")
    [got], _ = parse(raw)
    assert header(got, "Content-Type") == ["text/plain"] and header(got, "Accept") == ["application/json"]
    assert header(got, "Content-Length") == ["8"] and got["body"] == b"as it is"
    _, raw = encode(HttpRequest("GET", "https://h.example/"), "ua/1")
    [got], _ = parse(raw)
    assert header(got, "Content-Length") == [] and header(got, "Host") == ["h.example"]


@pytest.mark.parametrize("url", ["ftp://h.example/x", "http:///x", "mailto:a@b"])
def test_other_urls_are_refused_without_naming_them(url):
    with pytest.raises(TransportError, match="^unsupported URL$"):
        encode(HttpRequest("GET", url), "ua/1")
