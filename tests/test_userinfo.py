"""Credentials in URLs: Basic auth, where it goes along, and how such URLs are shown."""

from __future__ import annotations

import pytest

from asyncfetch._userinfo import (
    SIGNING_PARAMS,
    basic_auth,
    carry_userinfo,
    is_signed,
    redact,
    same_origin,
    strip_userinfo,
    url_key,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://u:pw@h:1/a?b#c", "http://u:***@h:1/a?b#c"),
        ("'https://u:p:w@h/x': HTTP 401", "'https://u:***@h/x': HTTP 401"),
        ("http://token@h/x", "http://***@h/x"),
        ("a http://u:1@h/ and http://v:2@g/ b", "a http://u:***@h/ and http://v:***@g/ b"),
        ("http://u:***@h/", "http://u:***@h/"),  # masking twice changes nothing
        ("http://h:8080/a:b@c", "http://h:8080/a:b@c"),  # an @ in the path is not userinfo
        ("http://h/x", "http://h/x"),
        # a password with @ in it is masked whole, up to the last @ before the host
        ("http://user:s3cr3t@with@ats@h:1/f", "http://user:***@h:1/f"),
        # a proxy without a scheme, as curl takes it, in aiohttp's words and in yarl's repr
        ("invalid URL (user:PROXYPASS@127.0.0.1:9)", "invalid URL (user:***@127.0.0.1:9)"),
        ("URL('u:p@w@proxy:3128')", "URL('u:***@proxy:3128')"),
        ("TOKEN@proxy:3128", "***@proxy:3128"),
        ("write to a@example.org", "write to a@example.org"),  # an address, not a proxy
        # the values of credential query parameters, whatever their case, in a fragment too
        (
            "https://b.s3/k?versionId=7&X-Amz-Signature=S1&x-amz-credential=C&X-Amz-Date=D",
            "https://b.s3/k?versionId=7&X-Amz-Signature=***&x-amz-credential=***&X-Amz-Date=***",
        ),
        ("{'http://h/x?sig=S&se=2&id=3': 5}", "{'http://h/x?sig=***&se=***&id=3': 5}"),
        ("http://h/cb#access_token=T&state=s", "http://h/cb#access_token=***&state=s"),
        (
            "'http://h/a?token=T', 'http://g/b?token=U'",
            "'http://h/a?token=***', 'http://g/b?token=***'",
        ),
        ("see http://h/x?Signature=S.", "see http://h/x?Signature=***."),
        ("http://[::1/x?sig=S", "http://***"),  # unparseable: nothing of it shown
        ("a=b c=d", "a=b c=d"),
        # a URL in a query value, its first parameter included
        (
            "http://h/a?next=http://u:p@g/b?sig=S&x=1",
            "http://h/a?next=http://u:***@g/b?sig=***&x=1",
        ),
    ],
)
def test_redact_masks_credentials_only(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_basic_auth_decodes_the_userinfo() -> None:
    assert basic_auth("http://Aladdin:open%20sesame@h/") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert basic_auth("http://token@h/") == "Basic dG9rZW46"
    assert basic_auth("http://h/a@b") is None


def test_strip_userinfo_keeps_the_rest_as_it_is() -> None:
    assert strip_userinfo("http://u:p@h:1/a?b=@#c") == "http://h:1/a?b=@#c"
    assert strip_userinfo("http://h/x?") == "http://h/x?"


@pytest.mark.parametrize(
    ("final", "carried"),
    [
        ("http://h/b", "http://u:p@h/b"),
        ("http://H:80/b", "http://u:p@H:80/b"),  # same origin, spelled otherwise
        ("http://h:81/b", "http://h:81/b"),
        ("https://h/b", "https://h/b"),
        ("http://g/b", "http://g/b"),
        ("http://v:q@h/b", "http://v:q@h/b"),  # a redirect's own credentials stay
    ],
)
def test_credentials_go_along_to_the_same_origin_only(final: str, carried: str) -> None:
    assert carry_userinfo("http://u:p@h/a", final) == carried


@pytest.mark.parametrize(
    ("other", "same"),
    [
        ("http://HOST:80/other?x", True),  # case and the default port do not matter
        ("http://u:p@host/f", True),  # nor credentials
        ("https://host/f", False),
        ("http://host:8080/f", False),
        ("http://cdn.host/f", False),
        ("not a url", False),
    ],
)
def test_same_origin_is_scheme_host_and_port(other: str, same: bool) -> None:
    assert same_origin("http://host/f", other) is same


def test_redacting_twice_changes_nothing() -> None:
    text = "get http://u:p@w@h/x?X-Amz-Signature=S&v=1 via u:q@proxy:1"
    assert redact(redact(text)) == redact(text)
    assert "S&" not in redact(text)
    assert "p@w" not in redact(text)
    assert ":q@" not in redact(text)


def test_the_list_has_the_credential_parameters_of_the_issue() -> None:
    named = {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature",
             "X-Goog-Credential", "Signature", "Key-Pair-Id", "Policy", "sig", "se", "token",
             "access_token"}  # fmt: skip
    assert {n.lower() for n in named} <= SIGNING_PARAMS


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (
            "https://h/f?X-Amz-Signature=A&X-Amz-Date=1",
            "https://h/f?X-Amz-Signature=B&X-Amz-Date=2",
            True,
        ),
        (
            "https://h/f?Expires=1&Signature=A&Key-Pair-Id=K",
            "https://h/f?Expires=2&Signature=B&Key-Pair-Id=K",
            True,
        ),
        ("https://h/f?versionId=1&sig=A", "https://h/f?versionId=2&sig=A", False),
        ("https://h/f?id=1", "https://h/f?id=2", False),
        ("https://u:p@h/f", "https://u:q@h/f", True),
        ("https://h/f", "https://h/g", False),
    ],
)
def test_a_url_signed_again_has_the_same_key(first: str, second: str, same: bool) -> None:
    assert (url_key(first) == url_key(second)) is same


def test_is_signed_looks_at_the_query_names() -> None:
    assert is_signed("https://h/f?a=1&X-Goog-Signature=x")
    assert not is_signed("https://h/f?a=1&b=sig")
    assert not is_signed("https://h/sig")
