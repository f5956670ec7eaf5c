"""ASGI middleware in front of the server's routes: the API key and the request-body size limit.

Plain ASGI, so it answers from the headers before any body is read (a declared length over the
limit never reaches memory) and counts a chunked body as it arrives.
"""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .protocol import APIError


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit of {limit:,} bytes "
                         "(see `hunyuan serve --max-request-size`)", code="request_too_large")


class HTTPGuard:
    """Rejects /v1 requests without `Authorization: Bearer KEY` (401) and bodies over a limit (413)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and scope["path"].startswith("/v1/"):
            if not secrets.compare_digest(headers.get(b"authorization", b""), self.expected):
                error = APIError(401, "Incorrect or missing API key; send 'Authorization: Bearer KEY'.",
                                 code="invalid_api_key")
                return await JSONResponse(error.body(), error.status)(scope, receive, send)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            error = _too_large(self.max_body)
            return await JSONResponse(error.body(), error.status)(scope, receive, send)
        received = 0

        async def counted_receive() -> Message:  # a chunked body declares no length
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _too_large(self.max_body)  # answered by the app's APIError handler
            return message

        await self.app(scope, counted_receive, send)
