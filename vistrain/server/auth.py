"""Bearer-token access control of ``vistrain serve --token`` (or ``VISTRAIN_TOKEN``).

With a token, every request needs ``Authorization: Bearer TOKEN`` except the pages and the
health check (:data:`OPEN_PATHS`): ``/`` and ``/docs`` are static HTML that hold no model answer
(their scripts send the token the user types), and ``/healthz`` is what a load balancer or a
container's HEALTHCHECK calls, without credentials.  ``/predict``, ``/explain``, ``/metadata``,
``/metrics``, ``/openapi.json`` and any unknown path answer 401 with a one-line JSON error and a
``WWW-Authenticate: Bearer`` header.  Tokens are compared with :func:`hmac.compare_digest`, whose
time does not depend on where the first differing byte is.

Example:
    >>> check_token("s3cret-token")
    >>> authorized(b"Bearer s3cret-token", "s3cret-token"), authorized(b"Bearer guess", "s3cret-token")
    (True, False)
"""
from __future__ import annotations

import hmac
import json

from vistrain.errors import VistrainError

TOKEN_ENV = "VISTRAIN_TOKEN"
OPEN_PATHS = frozenset({"/", "/docs", "/healthz"})
MIN_TOKEN_CHARS = 8


def check_token(token: str | None) -> None:
    """One-line :class:`VistrainError` for a token that cannot work in a header or is too easy
    to guess (``None``: no token, accepted)."""
    if token is None:
        return
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
        raise VistrainError(f"--token: must be at least {MIN_TOKEN_CHARS} characters; generate one "
                            "with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise VistrainError("--token: must be printable ASCII without spaces (it travels in an HTTP "
                            "header); generate one with: python -c 'import secrets; "
                            "print(secrets.token_urlsafe(24))'")


def authorized(header: bytes | None, token: str) -> bool:
    """True when the ``Authorization`` header value is ``Bearer <token>`` (constant time)."""
    scheme, _, given = (header or b"").partition(b" ")
    # compare_digest on bytes of any length: no early exit on the first wrong character
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode("ascii"))


class BearerAuth:
    """ASGI middleware: HTTP requests outside :data:`OPEN_PATHS` need the bearer ``token``;
    ``Middleware(BearerAuth, token=...)`` in a Starlette app (inside the metrics middleware, so a
    refused request is still counted and logged)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or ()).get(b"authorization")
        if authorized(header, self.token):
            return await self.app(scope, receive, send)
        what = "wrong bearer token" if header else "missing bearer token"
        body = json.dumps({"error": f"{what}: send the header 'Authorization: Bearer TOKEN' with the "
                                    f"token the server was started with (--token or {TOKEN_ENV})"}
                          ).encode("utf-8")
        challenge = b'Bearer realm="vistrain"' + (b', error="invalid_token"' if header else b"")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", challenge)]})
        await send({"type": "http.response.body", "body": body})
