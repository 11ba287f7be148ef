"""Which URLs the fetch path may open: the ``[fetch]`` host rules, checked on addresses.

A URL passes when its scheme is http(s), neither its host name nor any address it
resolves to is in ``blocked_hosts`` (names, ``.domain`` suffixes, IP addresses and CIDR
networks), and every address is public unless the host is in ``allowed_hosts`` or
``allow_private`` is set. Addresses are compared, not host text: ``2852039166``,
``0xa9.0xfe.0xa9.0xfe``, ``[::ffff:169.254.169.254]`` and any DNS name for it are all
169.254.169.254. The check returns the addresses it checked, so the caller can connect
to exactly those (a second lookup could answer differently: DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from endpoints.config import FetchSettings
from kitty.errors import ToolError

__all__ = ["CheckedUrl", "IpAddress", "Resolver", "check_url_allowed", "resolve_host"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IpAddress]]
"""Resolves ``(host, port)`` to addresses (blocking); raises ToolError when it cannot."""

# A host whose last label is a number is an IPv4 address (WHATWG URL's "ends in a number").
_NUMBER_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the rules, and the addresses that were checked for it.

    Attributes:
        url: The URL (surrounding whitespace removed).
        host: Its host, lower case, without brackets or a trailing dot.
        port: The port to connect to (the scheme's default when the URL has none).
        addresses: Every address the host resolved to, all allowed; connect only to these.
        resolved: True when the host is a name that was resolved, False when it is an
            address written in the URL (in any spelling).
    """

    url: str
    host: str
    port: int
    addresses: tuple[IpAddress, ...]
    resolved: bool


def resolve_host(host: str, port: int) -> list[IpAddress]:
    """The host's addresses from the system resolver (``getaddrinfo``), first answer first.

    Raises:
        ToolError: The host does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"cannot resolve host {host} ({exc})") from None
    found: list[IpAddress] = []
    for info in infos:
        # IPv6 sockaddrs may carry a %scope suffix.
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def check_url_allowed(
    url: str, settings: FetchSettings, *, resolve: Resolver = resolve_host
) -> CheckedUrl:
    """Refuse a URL the fleet file's ``[fetch]`` rules do not allow; else its addresses.

    Resolves the host (blocking, through ``resolve``) to check its addresses.

    Args:
        url: The URL to fetch.
        settings: The fleet file's ``[fetch]`` table.
        resolve: Turns a host name into addresses (the system resolver by default).

    Returns:
        The URL with the addresses that were checked: connect to one of these.

    Raises:
        ToolError: The URL is malformed (a space or control character, a port outside
            1-65535, no host), the scheme is not http(s), the host or one of its addresses is
            blocked, or it resolves to a non-public address that the settings do not
            allow; the message says which and the fleet-file change that would allow it.
    """
    url = url.strip()
    _check_characters(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise ToolError(f"refused {url!r}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ToolError(
            f"refused {url!r}: only http:// and https:// URLs can be fetched"
            + (f" (not {parts.scheme}:)" if parts.scheme else "")
        )
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ToolError(f"refused {url!r}: the URL has no host")
    if _host_listed(host, settings.blocked_hosts):
        raise ToolError(
            f"refused {url!r}: host {host} is blocked by [fetch] blocked_hosts in the fleet file"
        )
    port = _port(url, parts.netloc) or (443 if scheme == "https" else 80)
    addresses, resolved = _addresses(url, host, port, resolve)
    for address in addresses:
        blocked = _blocking_entry(address, settings.blocked_hosts)
        if blocked is not None:
            entry, matched = blocked
            shown = str(address) if matched == address else f"{address} ({matched})"
            raise ToolError(
                f"refused {url!r}: host {host} is {shown}, blocked by [fetch] blocked_hosts "
                f"entry {entry} in the fleet file"
            )
    if not settings.allow_private and not _host_listed(host, settings.allowed_hosts):
        for address in addresses:
            kind = _non_public_kind(address)
            if kind is not None:
                raise ToolError(
                    f"refused {url!r}: host {host} resolves to {address}, a {kind} address; "
                    f'to allow it add "{host}" to [fetch] allowed_hosts in the fleet file '
                    "(or set allow_private = true)"
                )
    try:
        httpx.URL(url)  # what the fetch will parse: refuse here what it would refuse
    except httpx.InvalidURL as exc:
        raise ToolError(f"refused {url!r}: not a valid URL ({exc})") from None
    return CheckedUrl(url=url, host=host, port=port, addresses=addresses, resolved=resolved)


_CONTROL_NAMES = {"\t": "a tab", "\n": "a line break", "\r": "a line break", " ": "a space"}


def _check_characters(url: str) -> None:
    """Refuse a URL with spaces or control characters (browsers strip some; httpx fails)."""
    for position, char in enumerate(url):
        if ord(char) <= 0x20 or 0x7F <= ord(char) <= 0x9F:
            name = _CONTROL_NAMES.get(char, "a control character")
            raise ToolError(
                f"refused {url!r}: the URL contains {name} ({char!r} at position {position}); "
                "percent-encode it (a space is %20, a tab %09) or remove it"
            )


def _port(url: str, netloc: str) -> int | None:
    """The URL's explicit port (1-65535), or None when it has none."""
    host_port = netloc.rpartition("@")[2]
    if host_port.startswith("["):
        host_port = host_port.partition("]")[2]
    _host, colon, text = host_port.rpartition(":") if ":" in host_port else ("", "", "")
    if not colon or not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ToolError(
            f"refused {url!r}: port {text} is not a valid port; a port is a number from 1 "
            "to 65535 (or leave it out for the scheme's default)"
        )
    return int(text)


def _host_listed(host: str, entries: Iterable[str]) -> bool:
    """``host`` equals an entry, or falls under a ``.domain`` entry (the domain included)."""
    for entry in entries:
        entry = entry.strip().rstrip(".").lower()
        if not entry:
            continue
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def _blocking_entry(address: IpAddress, entries: Iterable[str]) -> tuple[str, IpAddress] | None:
    """The ``blocked_hosts`` entry holding ``address`` (or its IPv4 form), and the form."""
    candidates: list[IpAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    for entry in entries:
        network = _network(entry)
        for candidate in candidates:
            if network is not None and candidate in network:
                return entry, candidate
    return None


def _network(entry: str) -> IpNetwork | None:
    """An address or CIDR entry as a network (an address is a one-address network)."""
    if entry.startswith("."):
        return None
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None  # a host name


def _addresses(
    url: str, host: str, port: int, resolve: Resolver
) -> tuple[tuple[IpAddress, ...], bool]:
    """The host's addresses, and whether they were resolved (not written in the URL).

    A literal is taken as written, a host ending in a number as IPv4, anything else is
    resolved by ``resolve``.
    """
    try:
        return (ipaddress.ip_address(host.strip("[]")),), False
    except ValueError:
        pass
    if _NUMBER_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        # 2852039166, 0xa9.0xfe.0xa9.0xfe, 0251.0376.0251.0376: IPv4 as resolvers read it.
        try:
            return (ipaddress.IPv4Address(socket.inet_aton(host)),), False
        except OSError:
            raise ToolError(
                f"refused {url!r}: host {host} ends in a number but is not a valid IPv4 "
                "address; write the address in dotted decimal form"
            ) from None
    found = tuple(resolve(host, port))
    if not found:
        raise ToolError(f"cannot resolve host {host} (no addresses)")
    return found, True


def _non_public_kind(address: IpAddress) -> str | None:
    """What makes ``address`` non-public ('loopback', 'private'...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)
