"""The fetch path's address rules: blocked addresses in any spelling, and pinned connections."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from endpoints.config import FetchSettings, FleetError, load_fleet
from kitty.errors import ToolError
from kitty.tools._fetch import IpAddress, check_url_allowed
from tests.helpers import offline_fleet

METADATA = "169.254.169.254"


class FakeDns:
    """A resolver answering from a table (names not in it do not resolve)."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[IpAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise ToolError(f"cannot resolve host {host} (not in the test's table)")
        return [ipaddress.ip_address(a) for a in self.table[host]]


def _blocking(*entries: str) -> FetchSettings:
    # allow_private, so only blocked_hosts can refuse these private addresses.
    return FetchSettings(allow_private=True, blocked_hosts=list(entries))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",  # the address as one decimal number
        "http://0xa9.0xfe.0xa9.0xfe/",  # hex octets
        "http://0251.0376.0251.0376/",  # octal octets
        "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]:8080/",
        "http://metadata.attacker.example/",  # any DNS name for the address
        "http://two.attacker.example/",  # one of its addresses is the blocked one
    ],
)
def test_a_blocked_address_is_refused_in_any_spelling(url: str) -> None:
    """Security review finding 3: blocked_hosts compares addresses, not host text."""
    dns = FakeDns(
        {
            "metadata.attacker.example": [METADATA],
            "two.attacker.example": ["93.184.215.14", f"::ffff:{METADATA}"],
        }
    )
    for entry in (METADATA, "169.254.0.0/16", f"::ffff:{METADATA}"):
        with pytest.raises(ToolError) as refused:
            check_url_allowed(url, _blocking(entry), resolve=dns)
        message = str(refused.value)
        assert "blocked by [fetch] blocked_hosts" in message and METADATA in message, message


def test_names_and_domains_still_block_by_name_and_others_pass() -> None:
    """Security review finding 3: name entries keep working; other addresses pass."""
    dns = FakeDns({"docs.example.com": ["93.184.215.14"], "ok.example.org": ["93.184.215.15"]})
    settings = _blocking(".example.com", "10.0.0.0/8", "fd00::/8")
    with pytest.raises(ToolError, match=r"host docs\.example\.com is blocked"):
        check_url_allowed("https://docs.example.com/", settings, resolve=dns)
    checked = check_url_allowed("https://ok.example.org/a", settings, resolve=dns)
    assert [str(a) for a in checked.addresses] == ["93.184.215.15"]
    for url in ("http://10.200.0.1/", "http://[fd12::1]/"):
        with pytest.raises(ToolError, match="blocked by"):
            check_url_allowed(url, settings, resolve=dns)


@pytest.mark.parametrize(
    ("entry", "stored"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("::ffff:169.254.0.0/112", "169.254.0.0/16"),
        ("FD00::/8", "fd00::/8"),
        ("Metadata.Google.Internal.", "metadata.google.internal"),
        (".Tracker.Example", ".tracker.example"),
        ("localhost", "localhost"),
    ],
)
def test_blocked_entries_are_read_as_names_addresses_or_networks(entry: str, stored: str) -> None:
    """Security review finding 3: entries are normalised when the settings load."""
    assert FetchSettings(blocked_hosts=[entry]).blocked_hosts == [stored]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.0.0.1/8", "has host bits set"),
        ("2852039166", "not a valid IP address"),
        ("0xa9.0xfe.0xa9.0xfe", "not a valid IP address"),
        ("10.0.0.0/33", "not a valid network"),
        ("http://evil.example/", "not a host name"),
        ("bad host", "not a host name"),
        ("", "empty"),
    ],
)
def test_a_bad_blocked_entry_is_refused_when_the_settings_load(entry: str, says: str) -> None:
    """Security review finding 3: an entry that would never match is an error, not ignored."""
    with pytest.raises(ValidationError, match=says) as refused:
        FetchSettings(blocked_hosts=[entry])
    assert "blocked_hosts" in str(refused.value)


def test_a_bad_blocked_entry_in_a_fleet_file_names_the_file_and_key(tmp_path: Path) -> None:
    """Security review finding 3: the fleet file's loader reports the entry and the fix."""
    fleet = offline_fleet(tmp_path)
    fleet.write_text(fleet.read_text() + '\n[fetch]\nblocked_hosts = ["2852039166"]\n')
    with pytest.raises(FleetError) as refused:
        load_fleet(str(fleet))
    message = str(refused.value)
    assert str(fleet) in message and "blocked_hosts" in message and "2852039166" in message
    assert "169.254.0.0/16" in message  # the message shows what a valid entry looks like
