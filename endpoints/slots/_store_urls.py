"""Slot store settings and server names: the ``slot_store`` value and normalised URLs.

Every process must name a server the same way for a shared store to count its slots
once (:func:`endpoint_key`); a store setting is checked at start (:func:`check_store_url`)
and shown with its password hidden (:func:`hide_password`).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from kitty.errors import SettingsError

LOCAL_STORE = "local"
STORE_URL_FORM = "local or redis://[:password@]host:port/db (e.g. redis://127.0.0.1:6379/0)"
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=4096)  # asked several times per model call; a fleet has few servers
def endpoint_key(base_url: str) -> str:
    """One name per server: ``localhost``, ``127.0.0.1`` and a trailing slash are the same.

    Scheme and host are lower-cased, loopback names become ``127.0.0.1``, a default port
    is written out, and trailing slashes go.
    """
    parts = urlsplit(base_url.strip())
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        host = "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_store_url(url: str, *, source: str = "slot_store") -> str:
    """Validate a slot store setting; returns it stripped.

    Raises:
        SettingsError: Neither ``local`` nor a ``redis://`` / ``rediss://`` URL with a host
            and, if given, a numeric db; one line naming it and the expected form.
    """
    text = url.strip()
    if text == LOCAL_STORE:
        return text
    problem = _url_problem(text)
    if problem:
        raise SettingsError(
            f"{source} = {url!r} is not valid ({problem}); expected {STORE_URL_FORM}"
        )
    return text


def _url_problem(text: str) -> str | None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("redis", "rediss"):
        return "unknown scheme" if parts.scheme else "no scheme"
    if not parts.hostname:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return "bad port"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"db {db!r} is not a number"
    return None


def hide_password(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
