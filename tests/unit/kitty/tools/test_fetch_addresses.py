"""The fetch path's address rules: blocked addresses in any spelling, and pinned connections."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from endpoints.config import FetchSettings, FleetError, load_fleet
from kitty.errors import ToolError
from kitty.tools._fetch import IpAddress, check_url_allowed, fetch_bytes
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


# --- DNS rebinding: the connection goes to the address that was checked ---------------


class _Named(BaseHTTPRequestHandler):
    """Answers with the name of the server it runs in and records each Host header."""

    name = ""
    hosts: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        if self.path == "/hop":
            address = self.server.server_address
            assert isinstance(address, tuple)  # (host, port)
            port = address[1]
            location = f"http://rebind.test:{port}/page"
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Twins:
    """Two servers on one port: the checked one (127.0.0.1), the internal one (127.0.0.2)."""

    port: int
    hosts: list[str] = field(default_factory=list)


def _serve(address: str, port: int, name: str, hosts: list[str]) -> ThreadingHTTPServer:
    handler = type("Handler", (_Named,), {"name": name, "hosts": hosts})
    server = ThreadingHTTPServer((address, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def twins() -> Iterator[Twins]:
    hosts: list[str] = []
    for _attempt in range(20):
        public = _serve("127.0.0.1", 0, "public page", hosts)
        port = public.server_address[1]
        try:  # the same port on another loopback address: free almost always
            internal = _serve("127.0.0.2", port, "INTERNAL SECRET", hosts)
        except OSError:
            public.shutdown()
            public.server_close()
            continue
        break
    else:
        raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")
    yield Twins(port, hosts)
    for server in (public, internal):
        server.shutdown()
        server.server_close()


# 127.0.0.2 stands for the internal service: blocked, while 127.0.0.1 is allowed.
REBIND_RULES = FetchSettings(allow_private=True, blocked_hosts=["127.0.0.2"])


class Rebinding:
    """Answers 127.0.0.1 to the first lookup of rebind.test and 127.0.0.2 to every later one."""

    def __init__(self) -> None:
        self.calls = 0

    def answer(self) -> str:
        self.calls += 1
        return "127.0.0.1" if self.calls == 1 else "127.0.0.2"


async def test_the_system_resolver_is_asked_once_and_its_answer_is_used(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review finding 2: a second lookup (DNS rebinding) is never made.

    Before the fix the host was resolved for the check, then again by httpx to connect,
    and the second answer (the internal address) was the one used.
    """
    rebinding = Rebinding()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes bytes
        if name == "rebind.test":
            host = rebinding.answer()
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    _final, body, cut = await fetch_bytes(
        f"http://rebind.test:{twins.port}/page", REBIND_RULES, max_bytes=1000
    )
    assert body == b"public page" and not cut
    assert rebinding.calls == 1
    assert twins.hosts[-1] == f"rebind.test:{twins.port}"  # the Host header is the name's


async def test_every_redirect_hop_connects_to_its_checked_address(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review finding 2: the injected resolver is the only lookup, hop by hop."""

    def no_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a second lookup of {host} was made to connect")

    rebinding = Rebinding()
    dns = FakeDns({})

    def resolve(host: str, port: int) -> list[IpAddress]:
        dns.asked.append(host)
        return [ipaddress.ip_address(rebinding.answer())]

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    final, body, _cut = await fetch_bytes(
        f"http://127.0.0.1:{twins.port}/hop", REBIND_RULES, max_bytes=1000, resolve=resolve
    )
    assert final == f"http://rebind.test:{twins.port}/page"
    assert body == b"public page" and dns.asked == ["rebind.test"]
    # A second fetch gets the rebinding answer at its check, and is refused there.
    with pytest.raises(ToolError, match=r"127\.0\.0\.2, blocked by \[fetch\] blocked_hosts"):
        await fetch_bytes(
            f"http://rebind.test:{twins.port}/page", REBIND_RULES, max_bytes=1000, resolve=resolve
        )


async def test_an_address_that_refuses_the_connection_is_skipped(twins: Twins) -> None:
    """Security review finding 2: only checked addresses are tried, in the resolver's order."""
    dns = FakeDns({"two.test": ["127.0.0.3", "127.0.0.1"]})  # nothing listens on .3
    _final, body, _cut = await fetch_bytes(
        f"http://two.test:{twins.port}/page", REBIND_RULES, max_bytes=1000, resolve=dns
    )
    assert body == b"public page"


async def test_https_keeps_the_name_for_sni_and_the_certificate_check(tmp_path: Path) -> None:
    """Security review finding 2: connecting to the address keeps TLS bound to the name."""
    cert, key = _self_signed(tmp_path, "rebind.test")
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    server = _serve("127.0.0.1", 0, "tls page", [])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:
        dns = FakeDns({"rebind.test": ["127.0.0.1"]})
        url = f"https://rebind.test:{server.server_address[1]}/page"
        # The test's certificate is not trusted: the check of it, for rebind.test, fails.
        with pytest.raises(ToolError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_bytes(url, REBIND_RULES, max_bytes=1000, resolve=dns)
    finally:
        server.shutdown()
        server.server_close()
    assert names == ["rebind.test"]


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
