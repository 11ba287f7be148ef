"""Service security: loopback-first binding, Host checks, bearer-token auth, body limits.

The guards are plain ASGI middleware (not ``BaseHTTPMiddleware``), so they add no task
per request and leave streaming responses (SSE) untouched.

Why the ``Host`` check: a loopback service without a token trusts whoever can reach
127.0.0.1, and a web page can reach it through *DNS rebinding* (its own name first
resolves to the attacker's server, then to 127.0.0.1; the browser keeps sending the
attacker's name as ``Host``). Answering only requests addressed to a loopback name or a
host named with ``--allowed-hosts`` closes that door.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitty.service._callers import SCOPE_KEY, USER_TOKENS_ENV_VAR, caller_for_token
from kitty.service._settings import TOKEN_ENV_VAR

logger = logging.getLogger("kitty.service")

# Bytes read and thrown away after a too-large body so the client gets its 413 instead of
# a connection reset (closing a socket with unread data resets it).
DRAIN_LIMIT_BYTES = 4 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine.

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) count; wildcard
    addresses (``0.0.0.0``, ``::``), other addresses and other host names do not.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_header(value: str) -> str:
    """The host name of a ``Host`` header, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    name, _, _port = value.partition(":")
    return name.rstrip(".")


def host_matches(name: str, pattern: str) -> bool:
    """``name`` equals ``pattern``, or is a subdomain of ``*.suffix`` (case-insensitive)."""
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == split_host_header(pattern)


def exposure_warning(host: str, token: str | None) -> str | None:
    """A warning for binding beyond loopback without a token (``None`` when safe)."""
    if is_loopback(host) or token:
        return None
    return (
        f"SECURITY WARNING: serving on {host}, reachable from other machines, with NO "
        f"authentication: anyone who can reach this port can run models on your fleet. "
        f"Set {TOKEN_ENV_VAR} to require a bearer token, or bind 127.0.0.1."
    )


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Send a complete JSON response from ASGI middleware."""
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value
    return None


class BearerTokenMiddleware:
    """Require ``Authorization: Bearer <token>`` on every path but the public ones.

    The token is compared with :func:`hmac.compare_digest` (constant time).

    The caller the token stands for (the operator, or a user of ``user_tokens``) is left
    in the scope's state for the routes (:func:`kitty.service._callers.caller_of`).

    Args:
        app: The wrapped ASGI app.
        token: The operator's token (``None``: only user tokens are accepted).
        public_paths: Paths served without a token (exact match).
        user_tokens: User name -> that user's token.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        public_paths: Iterable[str] = (),
        user_tokens: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        # Without an operator token only user tokens open the service: a random value no
        # client can present keeps the comparison (and its timing) the same.
        self._token = (token or secrets.token_hex(32)).encode()
        self._users = {user: t.encode() for user, t in (user_tokens or {}).items()}
        self._public = frozenset(public_paths)

    def _authorized(self, scope: Scope) -> str | None:
        """``None`` when authorized (the caller is then in the scope), else the reason."""
        header = _header(scope, b"authorization")
        if header is None:
            return (
                f"missing bearer token; send the header 'Authorization: Bearer <token>' "
                f"with the token the service was started with ({TOKEN_ENV_VAR})"
            )
        scheme, _, credentials = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return "the Authorization header must be 'Bearer <token>'"
        caller = caller_for_token(credentials.strip(), self._token, self._users)
        if caller is None:
            return (
                f"invalid bearer token; use the service's {TOKEN_ENV_VAR} or your own "
                f"token from its {USER_TOKENS_ENV_VAR}"
            )
        scope.setdefault("state", {})[SCOPE_KEY] = caller
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorized and public requests on; answer others with 401."""
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self._public:
            await self.app(scope, receive, send)
            return
        reason = self._authorized(scope)
        if reason is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json(
            send,
            401,
            {"error": reason, "field": "Authorization"},
            headers=[("www-authenticate", "Bearer")],
        )


class HostCheckMiddleware:
    """Answer only requests whose ``Host`` is a loopback name or an allowed host.

    Loopback names (``localhost``, ``127.0.0.1`` and the rest of ``127/8``, ``[::1]``)
    are always accepted, with any port. Anything else gets a 400 naming the host and
    the fix (``--allowed-hosts``); a WebSocket is closed with policy violation.

    Args:
        app: The wrapped ASGI app.
        allowed_hosts: Extra host names (``kitty.lan``) or ``*.suffix`` patterns.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self._allowed = [h for h in allowed_hosts if h.strip()]

    def _accepts(self, header: bytes | None) -> str | None:
        """``None`` when accepted, else the host as sent (for the error)."""
        raw = (header or b"").decode("latin-1")
        name = split_host_header(raw)
        if name and (is_loopback(name) or any(host_matches(name, p) for p in self._allowed)):
            return None
        return raw.strip() or "(no Host header)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass requests addressed to an accepted host on; answer others with 400."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self._accepts(_header(scope, b"host"))
        if refused is None:
            await self.app(scope, receive, send)
            return
        logger.warning("refused a request for host %r (not loopback, not allowed)", refused)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (
            f"this service does not answer requests for host {refused!r} (a page reaching "
            "a local service through DNS rebinding looks like this). If you meant to reach "
            "it under that name, restart it with --allowed-hosts "
            f"{split_host_header(refused) or 'NAME'}"
        )
        await send_json(send, 400, {"error": message, "field": "Host"})


class BodySizeLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413 before the app sees them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is
    read (counting the bytes of a chunked upload) up to the limit and replayed to the
    app, so no handler ever works on a partial body.

    Args:
        app: The wrapped ASGI app.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> dict[str, object]:
        return {
            "error": f"request body is larger than the service's limit of {self.max_bytes} "
            "bytes; send a shorter query or plan (or start the service with a larger "
            "--max-body-bytes)",
            "field": "body",
        }

    async def _drain(self, receive: Receive, already: int) -> None:
        seen = already
        while seen <= DRAIN_LIMIT_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer a body within the limit and replay it; answer bigger ones with 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await send_json(
                    send, 400, {"error": "Content-Length is not a number", "field": "body"}
                )
                return
            if length > self.max_bytes:
                # A client waiting for "100 Continue" gets the 413 instead and never sends
                # the body; others have it in flight, so read it away first.
                expects = (_header(scope, b"expect") or b"").lower() == b"100-continue"
                if not expects and length <= DRAIN_LIMIT_BYTES:
                    await self._drain(receive, 0)
                await send_json(send, 413, self._too_large())
                return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await send_json(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
