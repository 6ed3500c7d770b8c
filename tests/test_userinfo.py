"""Credentials in URLs: Basic auth, where it goes along, and how such URLs are shown."""

from __future__ import annotations

import pytest

from asyncfetch._userinfo import basic_auth, carry_userinfo, redact, same_origin, strip_userinfo


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
