"""The gateway's first line: bearer-token auth and the request-body limit, before FastAPI reads a body.

:class:`Guard` is ASGI middleware on /v1/*; :func:`digest_of` and :func:`token_matches` keep and compare a token's
SHA-256, so the token itself travels in no actor's arguments.
"""

import hashlib
import hmac

from fastapi.responses import JSONResponse

API_VERSION = "v1"


class Guard:
    """ASGI middleware run before FastAPI reads a body: the bearer token on /v1/* (401) and the body limit (413).

    Authentication comes first, so an unauthenticated caller learns nothing from validation errors; the body is
    read here, at most ``max_body_bytes`` of it (chunked bodies included), and replayed to the app.
    """

    def __init__(self, app, digest: str | None, max_body_bytes: int, error_body):
        self.app, self.digest, self.max_body_bytes, self.error_body = app, digest, max_body_bytes, error_body

    async def _reply(self, send, status: int, message: str, headers: dict | None = None) -> None:
        response = JSONResponse(self.error_body(message), status_code=status, headers=headers)
        await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(f"/{API_VERSION}/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.digest is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token_matches(given.strip(), self.digest):
                return await self._reply(
                    send,
                    401,
                    "missing or invalid bearer token (Authorization: Bearer <token>)",
                    {"WWW-Authenticate": "Bearer"},
                )
        too_large = f"request body over {self.max_body_bytes:,} bytes; send fewer or shorter items"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reply(send, 413, too_large)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._reply(send, 413, too_large)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: disconnect notices
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def digest_of(token: str | None) -> str | None:
    """SHA-256 of a bearer token: what the gateway keeps and compares, so the token itself is in no actor's
    arguments or runtime_env (both show in Ray's dashboard); None for no token."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def token_matches(given: str | None, digest: str) -> bool:
    """Whether a caller's bearer token is the one whose digest the gateway holds (constant-time compare)."""
    return hmac.compare_digest(digest_of(given) or "", digest)
