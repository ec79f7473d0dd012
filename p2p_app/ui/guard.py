"""Request limits in front of both Gradio apps (one ASGI middleware, installed by ``create_server``).

* Request bodies: at most ``MAX_BODY_BYTES`` (1 MiB) — by Content-Length up front, and counted while streaming
  for bodies without one; a larger body gets 413 before anything parses it.
* ``/gradio_api/upload`` (and its progress route) is closed: the app has no upload component.
* The rater app's ``/gradio_api/deep_link`` is closed: a snapshot of a session would carry the resume code
  shown once at sign-in, and each call writes a file.
* ``queue/join`` with an event index (``fn_index``) the app does not have, or a body that is not a JSON object,
  gets 400 with a message instead of a bare 500.
* The rater app's file routes serve only its presentation images (``/gradio_api/file=p2p/<token>.png``, answered
  by ``files.PresentationFiles``); every other file path there gets the same 404, whether or not it exists.
* The admin app's file routes go to Gradio, which asks for the admin cookie first: an outsider gets the same 401
  for a path that exists and one that does not. Its exports are deleted from Gradio's cache once downloaded.
* Admin sign-in (``POST /admin/login``) is throttled per address and per network (:class:`LoginThrottle`):
  exponential backoff after a few free tries, a 429 with ``Retry-After`` while waiting, never a global lock.
* A ``queue/join`` body nested deeper than ``MAX_JSON_DEPTH`` gets 400 (it used to be a bare 500).
* ``queue/data`` for a session this process never saw (the event was joined on another app server: a reverse
  proxy that is not sticky) gets a clear message for the person instead of Gradio's "Connection lost", and a
  warning in the log naming the cause (docs/deploy.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from ..limits import Backoff, Verdict, client_address, in_networks, network_of

log = logging.getLogger(__name__)

SESSION_ELSEWHERE = (
    "Your page is talking to a different app server than the one holding your session (the proxy in front of this "
    "app is not sticky: please tell the study organiser). Reload the page and sign in again with your resume code "
    "(or your invite link): everything saved stays saved, and you continue at your first unanswered item."
)

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
PRESENTATION_ROUTE = "/gradio_api/file=p2p/"  # files.PRESENTATION_ROUTE
IMAGE_SUFFIXES = frozenset({".png", ".webp", ".jpg", ".jpeg"})
ADMIN_PREFIX = "/admin"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class _TooLarge(Exception):
    pass


def gradio_cache_dir() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _file_path(path: str) -> str | None:
    """The file a Gradio file route names (``…/gradio_api/file=<path>`` or ``…/gradio_api/file/<path>``)."""
    for marker in ("/gradio_api/file=", "/gradio_api/file/", "/file="):
        if marker in path:
            return unquote(path.split(marker, 1)[1])
    return None


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class LoginThrottle:
    """Exponential backoff of wrong admin passwords per address and per network (``limits.Backoff``). An address
    in ``trusted`` (setting ``admin_trusted_networks``) is never slowed down. The network key counts one failure
    per four of one address, so neighbours behind one NAT keep their free tries."""

    def __init__(self, backoff: Backoff | None = None, trusted: tuple[str, ...] = (), behind_proxy: bool = False):
        self.backoff = backoff or Backoff(free=5, base=1.0, cap=900.0)
        self.trusted = trusted
        self.behind_proxy = behind_proxy

    def address(self, scope: Scope) -> str:
        return client_address(scope.get("client"), scope.get("headers") or [], self.behind_proxy)

    def keys(self, address: str) -> tuple[str, ...]:
        return (f"addr:{address}", f"net:{network_of(address)}")

    def check(self, address: str) -> Verdict:
        if in_networks(address, self.trusted):
            return Verdict(True)
        return self.backoff.check(*self.keys(address))

    def failed(self, address: str) -> None:
        if in_networks(address, self.trusted):
            return
        addr, net = self.keys(address)
        self.backoff.failed(addr)
        if self.backoff.failures(addr) % 4 == 0:
            self.backoff.failed(net)

    def succeeded(self, address: str) -> None:
        self.backoff.succeeded(f"addr:{address}")


class RequestGuard:
    """ASGI middleware; ``fn_indices(path)`` gives the event indices of the Gradio app that serves ``path``."""

    def __init__(self, app: Callable, fn_indices: Callable[[str], set[int] | None] | None = None,
                 max_body: int = MAX_BODY_BYTES, login: LoginThrottle | None = None,
                 api_names: Callable[[str, bool], set[str] | None] | None = None,
                 session_known: Callable[[str, str], bool | None] | None = None):  # fmt: skip
        self.app = app
        self.fn_indices = fn_indices
        self.api_names = api_names  # (path, public only) -> endpoint names Gradio can resolve there
        self.max_body = max_body
        self.login = login or LoginThrottle()
        self.session_known = session_known  # (path, session_hash) → does this process hold that queue session?
        self.foreign_sessions = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        if path.endswith("/gradio_api/upload") or path.endswith("/gradio_api/upload_progress"):
            await _reply(send, 403, "Uploads are closed: this app takes no files.")
            return
        if not admin and path.rstrip("/").endswith("/gradio_api/deep_link"):
            # the rater pages use no deep links; a snapshot would hold a session's values (a resume code shown
            # once) and write a file per call
            await _reply(send, 404, "Not found.")
            return
        file_path = _file_path(path)
        if file_path is not None and not admin and PRESENTATION_ROUTE not in path:
            await _reply(send, 404, "Not found.")  # the rater pages' images come only from the presentation route
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await _reply(send, 400, "Bad Content-Length.")
                return
            if too_big:
                await _reply(send, 413, f"The request body is larger than {self.max_body} bytes.")
                return
        if scope.get("method") == "GET" and path.endswith("/gradio_api/queue/data") and self.session_known:
            session_hash = _query_value(scope, "session_hash")
            if session_hash and self.session_known(path, session_hash) is False:
                await self._foreign_session(send, session_hash)
                return
        if scope.get("method") == "POST" and path.endswith("/gradio_api/queue/join"):
            await self._join(scope, receive, send)
            return
        call = api_call(path) if scope.get("method") == "POST" else None
        if call is not None:
            await self._join(scope, receive, send, call)
            return
        if scope.get("method") == "POST" and admin and path.rstrip("/") == ADMIN_PREFIX + "/login":
            await self._login(scope, receive, send)
            return
        if file_path is not None and admin:
            await self._download_once(scope, receive, send, file_path)
            return
        await self.app(scope, _limited(receive, self.max_body), send)

    async def _foreign_session(self, send: Send, session_hash: str) -> None:
        """The event stream of a session this process never saw: its queue/join went to another process."""
        self.foreign_sessions += 1
        if self.foreign_sessions == 1 or self.foreign_sessions % 100 == 0:
            log.warning(
                "queue/data for session %s, which this server never saw (%d so far): its event was sent to another "
                "app server, so the reverse proxy in front of the app servers is not sticky. Route every request of "
                "one browser to one server (deploy/nginx.conf, docs/deploy.md).",
                session_hash[:16], self.foreign_sessions,
            )
        message = {"msg": "unexpected_error", "message": SESSION_ELSEWHERE, "success": False}
        body = f"data: {json.dumps(message)}\n\n".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def _join(self, scope: Scope, receive: Receive, send: Send, call: tuple[str, str] | None = None) -> None:
        """Read the (bounded) body, check it names a real event, then hand it on unchanged. ``call``: a named
        endpoint's route and name (``/run/<name>``, ``/call/<name>``, ``/call/v2/<name>``): the body's
        ``fn_index`` (what the page's unqueued events send to ``/run/predict``) or else the name must resolve."""
        chunks, more = [], True
        total = 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                await _reply(send, 413, f"The request body is larger than {self.max_body} bytes.")
                return
            chunks.append(body)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            await _reply(send, 400, "The request body is not JSON (or nests too deeply).")
            return
        if json_depth(payload) > MAX_JSON_DEPTH:
            await _reply(send, 400, f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
            return
        if not isinstance(payload, dict):
            await _reply(send, 400, "The request body must be a JSON object.")
            return
        fn_index = payload.get("fn_index")
        known = self.fn_indices(scope.get("path", "")) if self.fn_indices else None
        named = call is not None and fn_index is None and call[0] != "call/v2"
        if named or (call is not None and call[0] == "call/v2"):  # resolved by name
            names = self.api_names(scope.get("path", ""), call[0] == "call/v2") if self.api_names else None
            if names is not None and call[1] not in names:
                await _reply(send, 400, f"Unknown or private endpoint {call[1][:100]!r}.")
                return
        elif known is not None and (isinstance(fn_index, bool) or not isinstance(fn_index, int) or fn_index not in known):
            await _reply(send, 400, f"Unknown event {fn_index!r}.")
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An admin sign-in attempt: refused at once (429) while its address or network must wait; otherwise
        Gradio's login answers, and a wrong password (400/401) counts against the address."""
        address = self.login.address(scope)
        verdict = self.login.check(address)
        if not verdict.allowed:  # not logged: a flood of refusals must not become a flood of log lines
            await _reply(send, 429, f"Too many wrong passwords from your address; try again in {verdict.wait_text()}.",
                         extra=[(b"retry-after", str(max(1, math.ceil(verdict.retry_after))).encode())])
            return
        # counted as a failure before it is checked, so parallel tries cannot slip in during one evaluation; a right
        # password clears the count again
        self.login.failed(address)

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status < 300:
                    self.login.succeeded(address)
                else:
                    wait = self.login.check(address).retry_after
                    if wait > 0:  # one line per wrong password that was checked (the backoff bounds how many)
                        log.warning("admin sign-in: wrong password from %s; its next try waits %.0f s", address, wait)
            await send(message)

        await self.app(scope, _limited(receive, self.max_body), watch)

    async def _download_once(self, scope: Scope, receive: Receive, send: Send, file_path: str) -> None:
        """Serve an admin file; an export (not an image) in Gradio's cache is deleted after a full download.

        Whether the path exists is not looked at here: Gradio asks for the admin cookie first, so an outsider gets
        one answer for every path. The file is unlinked just before the last body message goes out, so by the
        time the client has the whole file it is gone (a second request cannot race the deletion)."""
        target = Path(file_path)
        export = scope.get("method") == "GET" and target.suffix.lower() not in IMAGE_SUFFIXES
        status = 0

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and status == 200 and export:
                _delete_export(target)
            await send(message)

        await self.app(scope, receive, watch)


def _delete_export(target: Path) -> None:
    try:
        resolved = target.resolve()
        if resolved.is_relative_to(gradio_cache_dir()):
            resolved.unlink(missing_ok=True)
            try:
                resolved.parent.rmdir()
            except OSError:
                pass
    except OSError as exc:  # pragma: no cover - logged, the download itself succeeded
        log.warning("could not delete the downloaded export %s: %s", target, exc)


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they stream (chunked bodies have no Content-Length)."""
    total = 0

    async def inner() -> dict:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise _TooLarge
        return message

    return inner


def _query_value(scope: Scope, name: str) -> str:
    from urllib.parse import parse_qs

    values = parse_qs((scope.get("query_string") or b"").decode("latin-1")).get(name) or [""]
    return values[0]


async def _reply(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def install(server: Any, login: LoginThrottle | None = None) -> None:
    """Wrap ``server`` (the FastAPI app of create_server) in the guard; event indices come from its mounts."""

    def blocks_at(path: str) -> Any:
        from starlette.routing import Mount

        best = None
        for route in server.routes:
            if isinstance(route, Mount) and (path.startswith(route.path + "/") or route.path == ""):
                if best is None or len(route.path) > len(best.path):
                    best = route
        blocks = getattr(getattr(best, "app", None), "get_blocks", None)
        return blocks() if blocks is not None else None

    def fn_indices(path: str) -> set[int] | None:
        blocks = blocks_at(path)
        return None if blocks is None else set(blocks.fns)

    def api_names(path: str, public_only: bool) -> set[str] | None:
        """Names ``route_utils.get_fn`` resolves; ``call/v2`` resolves only documented (public) endpoints."""
        blocks = blocks_at(path)
        if blocks is None:
            return None
        return {fn.api_name for fn in blocks.fns.values() if isinstance(fn.api_name, str)
                and (not public_only or getattr(fn, "api_visibility", "public") == "public")}  # fmt: skip

    def session_known(path: str, session_hash: str) -> bool | None:
        # Gradio keeps one message queue per session that joined an event here (gradio/queueing.py); None when
        # that internal is not there (another Gradio version): then nothing is refused
        sessions = getattr(getattr(blocks_at(path), "_queue", None), "pending_messages_per_session", None)
        return None if sessions is None else session_hash in sessions

    server.add_middleware(_GuardFactory, fn_indices=fn_indices, login=login, api_names=api_names,
                          session_known=session_known)


class _GuardFactory(RequestGuard):
    def __init__(self, app: Callable, fn_indices: Callable[[str], set[int] | None], login: LoginThrottle | None = None,
                 api_names: Callable[[str, bool], set[str] | None] | None = None,
                 session_known: Callable[[str, str], bool | None] | None = None):  # fmt: skip
        super().__init__(app, fn_indices, login=login, api_names=api_names, session_known=session_known)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _TooLarge:
            await _reply(send, 413, f"The request body is larger than {self.max_body} bytes.")


API_CALL = re.compile(r"/gradio_api/(call/v2|call|run|api)/([^/]+)/?$")


def api_call(path: str) -> tuple[str, str] | None:
    """(route, endpoint name) of a named-endpoint call (``…/gradio_api/call/<name>``, ``call/v2``, ``run``), else
    None."""
    m = API_CALL.search(path)
    return (m.group(1), unquote(m.group(2))) if m else None
