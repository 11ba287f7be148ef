"""Who is calling: the identity a request's token stands for, and whose memory a run uses.

The memory tools keep notes per user (``("memory", user, agent)``). Over HTTP the user is
bound to the caller, never taken on a client's word (security review finding 9):

- the **operator** token (``KITTY_API_TOKEN``), or no token at all on a loopback service,
  stands for the operator: runs use the fleet's ``[memory] user_id``, and a request may
  name another ``user`` (the operator acts for its users, e.g. a chat front end that
  passes each of its users along);
- a **user token** (``KITTY_USER_TOKENS="alice=TOKEN,bob=TOKEN"``) stands for that user:
  its runs use that user's notes, and a request naming anyone else is refused (403).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from kitty.errors import SettingsError
from kitty.service._errors import RequestError

USER_TOKENS_ENV_VAR = "KITTY_USER_TOKENS"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Tokens shorter than this are guessable; the service refuses to start with one.
MIN_TOKEN_CHARS = 16
# Where the bearer middleware leaves the caller for the routes (the ASGI scope's state).
SCOPE_KEY = "kitty_caller"


@dataclass(frozen=True)
class Caller:
    """The identity behind a request.

    Attributes:
        user: The user a user token stands for; ``None`` for the operator.
    """

    user: str | None = None

    @property
    def operator(self) -> bool:
        """True for the operator's token (or a service without tokens)."""
        return self.user is None


OPERATOR = Caller()


def parse_user_tokens(text: str) -> dict[str, str]:
    """``"alice=TOKEN,bob=TOKEN"`` as ``{user: token}``.

    Raises:
        SettingsError: A malformed pair, a bad user name, a short or repeated token.
    """
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        user, sep, token = pair.partition("=")
        user, token = user.strip(), token.strip()
        if not sep or not user or not token:
            raise SettingsError(
                f"{USER_TOKENS_ENV_VAR}: {pair.split('=')[0]!r}... is not USER=TOKEN; write "
                "the users as alice=TOKEN,bob=TOKEN"
            )
        check_user(user, f"{USER_TOKENS_ENV_VAR}: user")
        if len(token) < MIN_TOKEN_CHARS:
            raise SettingsError(
                f"{USER_TOKENS_ENV_VAR}: the token of {user!r} has {len(token)} characters; "
                f"use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)"
            )
        if user in tokens or token in tokens.values():
            raise SettingsError(f"{USER_TOKENS_ENV_VAR}: {user!r} or its token is listed twice")
        tokens[user] = token
    return tokens


def check_user(name: str, what: str = "user") -> str:
    """``name`` if it is a usable user name, else ``SettingsError`` saying what is."""
    if not _USER_NAME.fullmatch(name):
        raise SettingsError(
            f"{what} {name!r} is not a usable name; use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def caller_for_token(
    presented: bytes, operator_token: bytes, user_tokens: dict[str, bytes]
) -> Caller | None:
    """The caller a presented token stands for, or ``None`` for no known token.

    Every comparison runs in constant time, and every token is compared (the time does
    not tell which one matched).
    """
    found: Caller | None = None
    if hmac.compare_digest(presented, operator_token):
        found = OPERATOR
    for user, token in user_tokens.items():
        if hmac.compare_digest(presented, token):
            found = Caller(user=user)
    return found


def caller_of(connection: HTTPConnection) -> Caller:
    """The caller the bearer middleware found (the operator when the service has no token)."""
    found = connection.scope.get("state", {}).get(SCOPE_KEY)
    return found if isinstance(found, Caller) else OPERATOR


def memory_user(caller: Caller, asked: str | None) -> str | None:
    """Whose notes a run of ``caller`` uses when the request asks for ``asked``.

    Returns:
        The user name, or ``None`` for the fleet's default user.

    Raises:
        RequestError: 403 when a user token asks for another user's notes.
    """
    if caller.user is not None:
        if asked is not None and asked != caller.user:
            raise RequestError(
                403,
                f"this token belongs to user {caller.user!r}; it cannot use the notes of "
                f"{asked!r}. Leave 'user' out (or use the operator's token)",
                "user",
            )
        return caller.user
    return asked
