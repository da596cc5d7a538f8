"""HTTP middleware (pure ASGI): JSON bodies for low-level errors, security headers on every response."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod

__all__ = ["CONTENT_SECURITY_POLICY", "PlainTextErrorsAsJson", "SecurityHeaders"]

# The page and /docs load only their own scripts, styles and images (uploads are shown through blob:
# URLs, Swagger UI's icons are data: URLs); no inline script, no framing.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'self'")


class _ResponseRewriter(ABC):
    """Pure ASGI middleware that rewrites the messages of HTTP responses; other scopes pass through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, self.wrap(scope, send) if scope["type"] == "http" else send)

    @abstractmethod
    def wrap(self, scope, send):
        """The ``send`` the app gets for this HTTP request."""


class PlainTextErrorsAsJson(_ResponseRewriter):
    """ASGI middleware: error responses sent as plain text below the app (Starlette's 413 for a body over
    ``max_body_size``, for one) reach the client as JSON ``{"detail": "<the text>"}`` like every other error."""

    def wrap(self, scope, send):
        held: dict | None = None
        body = b""

        async def send_json_errors(message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    held = message
                    return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            payload = json.dumps({"detail": body.decode("utf-8", "replace")}).encode()
            headers = [(k, v) for k, v in held.get("headers", []) if k not in (b"content-type", b"content-length")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        return send_json_errors


class SecurityHeaders(_ResponseRewriter):
    """Adds ``Content-Security-Policy``, ``X-Content-Type-Options: nosniff``,
    ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY`` to every HTTP response."""

    def wrap(self, scope, send):
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                 (b"x-frame-options", b"DENY"), (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return send_with_headers
