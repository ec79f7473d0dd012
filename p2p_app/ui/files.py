"""Blind file responses: no header of a served file may order or name the images (pure ASGI, no Gradio).

Gradio serves files through Starlette's ``FileResponse``, which adds ``Last-Modified`` and an ``ETag`` made from
the file's modification time and size, answers ``If-None-Match`` / ``If-Modified-Since`` with 304 and ``Range``
with 206. Presentation files all have one mtime and one byte size already (``p2p_app.blinding``); this
middleware makes sure of it a second way, for every file route (``/gradio_api/file=…``, also under ``/admin``):

* the request's conditional and range headers are dropped, so every GET is a full 200 of the same bytes
  (a HEAD the same headers without a body), and no 304/206 answer can probe a file's time or content;
* the response's ``Last-Modified``, ``ETag`` and ``Accept-Ranges`` are removed and ``Cache-Control: no-store``
  is set, so nothing is cached or revalidated by time.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

FILE_ROUTE_MARK = "/file="
DROPPED_REQUEST_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since",
                                     b"if-range", b"range"})
DROPPED_RESPONSE_HEADERS = frozenset({b"last-modified", b"etag", b"accept-ranges", b"cache-control"})


def is_file_route(path: str) -> bool:
    return FILE_ROUTE_MARK in path


class BlindFileHeaders:
    """ASGI middleware: file routes get no validators, no ranges and no caching (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        if scope.get("type") != "http" or not is_file_route(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in DROPPED_REQUEST_HEADERS]
        scope = dict(scope, headers=headers)

        async def send_blind(message: Message) -> None:
            if message.get("type") == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in DROPPED_RESPONSE_HEADERS]
                kept.append((b"cache-control", b"no-store"))
                message = dict(message, headers=kept)
            await send(message)

        await self.app(scope, receive, send_blind)


PRESENTATION_ROUTE = "/gradio_api/file=p2p/"  # + "<token>.png": ui.common.presentation_url
NOT_FOUND = b'{"error": "Not found."}'


class PresentationFiles:
    """ASGI middleware answering the rater pages' image URLs (``/gradio_api/file=p2p/<token>.png``) from the
    stored files through ``P2PApp.presentation``: an opaque token per presentation, the file's sha256 checked,
    bytes re-split per token, nothing copied to Gradio's cache. GET and HEAD only; anything else, an unknown
    token or a refused image is the same 404."""

    def __init__(self, app: ASGIApp, presentation: Callable[[str], bytes | None]) -> None:
        self.app = app
        self.presentation = presentation

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if PRESENTATION_ROUTE not in path or path.startswith("/admin"):
            await self.app(scope, receive, send)
            return
        name = path.split(PRESENTATION_ROUTE, 1)[1]
        token = name[:-4] if name.endswith(".png") else ""
        data = None
        if scope.get("method") in ("GET", "HEAD") and token and "/" not in token:
            import anyio

            data = await anyio.to_thread.run_sync(self.presentation, token)
        if data is None:
            await _answer(send, 404, b"application/json", NOT_FOUND, True)
            return
        await _answer(send, 200, b"image/png", data, scope.get("method") == "GET")


async def _answer(send: Callable[[Message], Awaitable[None]], status: int, kind: bytes, body: bytes, with_body: bool) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body if with_body else b""})


def install(server: Any, presentation: Callable[[str], bytes | None] | None = None) -> None:
    """Add :class:`PresentationFiles` (when ``presentation`` is given) and :class:`BlindFileHeaders` around it to a
    Starlette/FastAPI app (so the blind headers apply to every file route, the presentation route included)."""
    if presentation is not None:
        server.add_middleware(PresentationFiles, presentation=presentation)
    server.add_middleware(BlindFileHeaders)
