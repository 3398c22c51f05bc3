"""HEAD answered for every GET route, as HTTP asks of a general-purpose server.

Load balancers and uptime checkers probe with HEAD, and a portal may ask for a message's
``ETag`` without its body; FastAPI routes answer only the methods they list (405
otherwise). Listing HEAD beside every GET would put each operation twice in the OpenAPI
document, so the request runs as the GET it mirrors and only the body is dropped: the
status and headers (``ETag``, ``Content-Length``, ``WWW-Authenticate``) are the GET's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet"]


class HeadAsGet:
    """Pure ASGI: a HEAD request runs as GET, its response sent without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a streamed part: none of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
