"""The gateway's first line: bearer-token auth, admission, the request-body limit and the deadline, before FastAPI
reads a body.

:class:`Guard` is ASGI middleware on /v1/*; :func:`digest_of` and :func:`token_matches` keep and compare a token's
SHA-256, so the token itself travels in no actor's arguments.
"""

import asyncio
import contextlib
import hashlib
import hmac

from fastapi.responses import JSONResponse

API_VERSION = "v1"


class Guard:
    """ASGI middleware run before FastAPI reads a body, on /v1/*, in this order:

    1. the bearer token (401), so an unauthenticated caller learns nothing from any later check;
    2. admission: at most ``max_in_flight`` requests in this replica; the next one gets a JSON 503 with
       ``Retry-After`` at once (the deployment accepts more than that, so a burst is answered here, in JSON,
       rather than by Ray's proxy queue in plain text);
    3. the body limit (413): at most ``max_body_bytes`` read (chunked bodies included), then replayed to the app;
    4. the deadline: a request not answered within ``timeout_s`` gets a JSON 408 and its work is cancelled (the
       proxy's own ``request_timeout_s`` is set longer, so this answer comes first).
    """

    def __init__(self, app, digest: str | None, max_body_bytes: int, error_body, max_in_flight: int, timeout_s: float):
        self.app, self.digest, self.max_body_bytes, self.error_body = app, digest, max_body_bytes, error_body
        self.max_in_flight, self.timeout_s, self.in_flight = max_in_flight, timeout_s, 0

    async def _reply(self, send, status: int, message: str, headers: dict | None = None) -> None:
        response = JSONResponse(self.error_body(message), status_code=status, headers=headers)
        await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _route(scope).startswith(f"/{API_VERSION}/"):
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
        if self.in_flight >= self.max_in_flight:
            return await self._reply(
                send,
                503,
                f"the service is at capacity ({self.max_in_flight} requests in progress on this replica); "
                "retry shortly",
                {"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send, headers)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope, receive, send, headers: dict) -> None:
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
        body, sent, started = b"".join(chunks), False, False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: disconnect notices
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def watched_send(message):
            nonlocal started
            if late:
                return  # the 408 went out; what the app still sends is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        # asyncio.wait, not wait_for: wait_for returns the app's answer when the app finishes while being cancelled
        # (an await that absorbs the cancellation), so the answer could come after the deadline; here the 408 goes
        # out at the deadline whatever the app does, and whatever it sends later is dropped.
        late, work = False, asyncio.ensure_future(self.app(scope, replay, watched_send))
        try:
            await asyncio.wait({work}, timeout=self.timeout_s)
        except asyncio.CancelledError:  # the client went away
            work.cancel()
            raise
        if work.done() or started:  # answered in time, or an answer already under way: let it finish
            return await work
        late = True
        await self._reply(
            send,
            408,
            f"the request was not answered within {self.timeout_s:g} s (request_timeout_s); retry, or send fewer items",
        )
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work


def _route(scope) -> str:
    """The path inside the application: under a Serve ``route_prefix`` (``/secure``), Starlette's ``path`` starts
    with the ``root_path``, and a check on ``/v1/`` alone let every request there past the Guard."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def digest_of(token: str | None) -> str | None:
    """SHA-256 of a bearer token: what the gateway keeps and compares, so the token itself is in no actor's
    arguments or runtime_env (both show in Ray's dashboard); None for no token."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def token_matches(given: str | None, digest: str) -> bool:
    """Whether a caller's bearer token is the one whose digest the gateway holds (constant-time compare)."""
    return hmac.compare_digest(digest_of(given) or "", digest)
