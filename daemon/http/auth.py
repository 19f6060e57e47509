"""Who may do what over HTTP: named tokens with roles (DESIGN "Operating it as a team").

    http_tokens = { "alice" = { token = "env:ALICE_TOKEN", role = "operator" } }

`viewer` reads (every GET; a token is needed only with `http_read_auth = true`),
`operator` also triggers, pauses, resumes, reruns and backfills, `admin` also reloads and
stops. The single `http_token` of before is an admin token named "http_token". A token
is compared in constant time with every known one (sha256 of each side, so neither a
prefix nor the length shows in the timing). No header: 401; a token that is not known:
403 (as before); one of too low a role: 403 naming the role it needs. Webhooks
(/hooks/...) are signed, not tokened: this module never looks at them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon import revealed
from daemon.settings import ROLES

ACTION_ROLES = {
    "trigger": "operator",
    "pause": "operator",
    "resume": "operator",
    "rerun": "operator",
    "backfill": "operator",
    "reload": "admin",
    "stop": "admin",
}
OLD_TOKEN_NAME = "http_token"
OPEN_PATHS = ("/healthz",)  # a load balancer's probe: says ok or why not, nothing else
SIGNED_PREFIX = "/hooks/"  # webhooks: their signature is their authentication


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    digest: bytes  # sha256 of the token: never the token itself


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the token's name and role, and the client address."""

    name: str
    role: str
    client: str

    def may(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Tokens:
    """The daemon's tokens (resolved once, at start: `env:` / `file:` references)."""

    def __init__(self, tokens: list[Token], *, read_auth: bool):
        self._tokens = tokens
        self.read_auth = read_auth

    @classmethod
    def from_settings(cls, settings) -> Tokens:
        """Each token resolved here, in `serve` (an `env:` / `file:` reference is read
        now; SecretError names the setting)."""
        tokens = []
        if settings.http_token:
            value = revealed.reveal(settings.http_token, where="setting 'http_token'")
            tokens.append(Token(OLD_TOKEN_NAME, "admin", _digest(value)))
        for name, entry in settings.http_tokens.items():
            value = revealed.reveal(entry["token"], where=f"setting 'http_tokens.{name}.token'")
            tokens.append(Token(name, entry["role"], _digest(value)))
        return cls(tokens, read_auth=settings.http_read_auth)

    def find(self, given: str) -> Token | None:
        """The token `given` is, comparing with every one (no early exit)."""
        digest, found = _digest(given), None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        return found

    def caller(self, request: Request, needed: str) -> Caller | JSONResponse:
        """The caller of a request that needs role `needed`, or the refusal to send."""
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        if not self._tokens:
            if needed == "viewer":  # http_read_auth without a token: nothing can be read
                return _refuse(403, "reads need a token (http_read_auth) and none is set")
            return _refuse(403, "changes over HTTP are off: no http_token is set")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            cookie = request.cookies.get("flowerd_token", "") if needed == "viewer" else ""
            given = unquote(cookie)
            if not given:
                return _refuse(
                    401,
                    "this needs the header 'Authorization: Bearer <token>' (a token of "
                    f"role {needed} or above: http_tokens or http_token)",
                    **{"WWW-Authenticate": "Bearer"},
                )
        token = self.find(given.strip())
        if token is None:
            return _refuse(403, "wrong token")
        caller = Caller(token.name, token.role, client)
        if not caller.may(needed):
            return _refuse(
                403, f"this needs the {needed} role; token {token.name!r} has the role {token.role}"
            )
        return caller


def _refuse(status_code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers or None)


class ReadAuth:
    """ASGI middleware: with `http_read_auth`, every GET (but /healthz) needs a token
    of any role -- the header, or the page's `flowerd_token` cookie. POSTs check their
    own role (json_api) or signature (webhooks)."""

    def __init__(self, app: ASGIApp, tokens: Tokens):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._guarded(scope):
            caller = self.tokens.caller(Request(scope), "viewer")
            if isinstance(caller, JSONResponse):
                await caller(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        return (
            self.tokens.read_auth
            and scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"] not in OPEN_PATHS
            and not scope["path"].startswith(SIGNED_PREFIX)
        )
