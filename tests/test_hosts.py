"""Host names as compared (gateway/hosts.py): a received Host normalised, malformed ones refused, configured
patterns checked."""

from __future__ import annotations

import pytest

from gateway.hosts import MalformedHost, configured_host, host_template, label_in, normalise_host
from gateway.policy.rules import ORG_SLUG_RE
from gateway.settings import ORG_SLUG_RE as SETTINGS_SLUG_RE


@pytest.mark.parametrize(
    ("received", "compared"),
    [
        pytest.param("api.example.com", "api.example.com", id="plain"),
        pytest.param("API.Example.COM", "api.example.com", id="upper-case"),
        pytest.param("api.example.com.", "api.example.com", id="trailing-dot"),
        pytest.param("api.example.com:8443", "api.example.com", id="port"),
        pytest.param("API.example.com.:80", "api.example.com", id="all-three"),
        pytest.param("xn--bcher-kva.example", "xn--bcher-kva.example", id="punycode-as-received"),
        pytest.param("127.0.0.1:8080", "127.0.0.1", id="ipv4"),
        pytest.param("[::1]:8080", "[::1]", id="ipv6-port"),
        pytest.param("[2001:DB8::1]", "[2001:db8::1]", id="ipv6"),
        pytest.param("", None, id="empty-is-none"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_a_received_host_is_compared_lower_case_without_port_or_trailing_dot(
    received: str | None, compared: str | None
) -> None:
    """Case, one trailing dot and the port never make two hosts differ; IDNA names stay punycode."""
    assert normalise_host(received) == compared


@pytest.mark.parametrize(
    "received",
    [
        pytest.param("exa mple.com", id="space"),
        pytest.param("a..b", id="empty-label"),
        pytest.param("example.com..", id="two-trailing-dots"),
        pytest.param("-bad.example.com", id="leading-hyphen"),
        pytest.param("api.example.com:http", id="port-not-number"),
        pytest.param("api.example.com:99999", id="port-too-big"),
        pytest.param("api.example.com:", id="empty-port"),
        pytest.param("bücher.example", id="raw-unicode"),
        pytest.param("a.com, b.com", id="list"),
        pytest.param("user@api.example.com", id="userinfo"),
        pytest.param("api.example.com/x", id="path"),
        pytest.param("[::1", id="open-bracket"),
        pytest.param("*.example.com", id="wildcard"),
        pytest.param("a" * 64 + ".com", id="label-too-long"),
    ],
)
def test_a_malformed_host_is_refused(received: str) -> None:
    """Anything but `name[:port]` or `[v6][:port]` is a 400 (MalformedHost), never a guess."""
    with pytest.raises(MalformedHost):
        normalise_host(received)


@pytest.mark.parametrize(
    ("pattern", "stored"),
    [
        ("API.example.com", "api.example.com"),
        ("*.Apps.example.com", "*.apps.example.com"),
        ("example.com.", "example.com"),
    ],
)
def test_configured_hosts_are_stored_as_compared(pattern: str, stored: str) -> None:
    """A `hosts` entry is lower-cased and loses its trailing dot, like received hosts."""
    assert configured_host(pattern) == stored


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("*", "wildcard"),
        ("*.*.example.com", "wildcard"),
        ("a.*.example.com", "wildcard"),
        ("*x.example.com", "wildcard"),
        ("api.example.com:443", "port"),
        ("bücher.de", "punycode"),
        ("", "not a host name"),
    ],
)
def test_bad_configured_hosts_are_refused(pattern: str, why: str) -> None:
    """A wildcard is one whole leading label; no port; no raw Unicode."""
    with pytest.raises(ValueError, match=why):
        configured_host(pattern)


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("acme.apps.example.com", "acme"),
        ("a.b.apps.example.com", ""),
        ("apps.example.com", ""),
        ("acme.apps.example.org", ""),
        (None, ""),
    ],
)
def test_the_org_label_is_read_only_from_a_host_fitting_the_pattern_exactly(host: str | None, label: str) -> None:
    """`{org}.apps.example.com` reads one label, and nothing from a host with more, fewer or other labels."""
    assert label_in(host_template("{org}.apps.example.com"), host) == label


def test_settings_check_slugs_as_the_policy_does() -> None:
    """settings.py keeps its own copy of the org-slug syntax (to not load casbin): the two are the same."""
    assert SETTINGS_SLUG_RE.pattern == ORG_SLUG_RE.pattern
