"""Demo social backend that sits behind tsgate and trusts its identity headers.

Identity: ``X-Tsgate-User`` names the caller (profile auto-created on first sight),
``X-Tsgate-Roles`` is a comma-separated role list. Every error is an RFC 9457
``application/problem+json`` body. ``/api/debug/*`` endpoints exist so tests can see
exactly what the gateway forwarded (echo, SSE, slow, large bodies, websocket).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, TypeVar, cast

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.demo.assertion import AssertionRefused, verify_assertion
from gateway.demo.store import ProblemError, Store

JSON_BODY_LIMIT = 64 * 1024  # bytes, for the JSON API
DEBUG_BODY_LIMIT = 256 * 1024 * 1024  # bytes, for /api/debug/echo, /upload and /bytes
CHUNK_SIZE = 64 * 1024
POST_BODY_MAX = 10_000
COMMENT_BODY_MAX = 2_000
DISPLAY_NAME_MAX = 100
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
ECHO_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_PATTERN_BLOCK = bytes(range(256)) * (CHUNK_SIZE // 256)

router = APIRouter()
M = TypeVar("M", bound=BaseModel)


# -- problem+json ---------------------------------------------------------------
def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """Build an RFC 9457 problem response."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))} for e in errors
    ]


async def _on_problem(_: Request, exc: Exception) -> Response:
    err = cast(ProblemError, exc)
    return problem(err.status, err.detail, **err.extra)


async def _on_validation(_: Request, exc: Exception) -> Response:
    errors = _clean_errors(cast(RequestValidationError, exc).errors())
    return problem(422, "request parameters failed validation", errors=errors)


async def _on_http(_: Request, exc: Exception) -> Response:
    err = cast(StarletteHTTPException, exc)
    return problem(err.status_code, str(err.detail), headers=dict(err.headers or {}))


async def _on_crash(_: Request, exc: Exception) -> Response:
    return problem(500, "internal error")


# -- identity & request bodies --------------------------------------------------
@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    roles: frozenset[str]


def parse_identity(headers: Headers) -> Identity | None:
    """Identity from tsgate's headers; None if anonymous, 400 if malformed or ambiguous."""
    users = headers.getlist("x-tsgate-user")
    if not users:
        return None
    if len(users) > 1:
        raise ProblemError(400, "multiple X-Tsgate-User headers")
    user = users[0].strip()
    if not USERNAME_RE.fullmatch(user):
        raise ProblemError(400, "X-Tsgate-User is not a valid username")
    raw_roles = ",".join(headers.getlist("x-tsgate-roles"))
    roles = frozenset(r.strip().lower() for r in raw_roles.split(",") if r.strip())
    try:
        verify_assertion(headers.get("x-tsgate-assertion"), headers.get("x-tsgate-decision"))
    except AssertionRefused as exc:
        raise ProblemError(401, str(exc)) from exc
    return Identity(user, roles)


async def get_store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


StoreDep = Annotated[Store, Depends(get_store)]


async def get_identity(request: Request) -> Identity | None:
    return parse_identity(request.headers)


async def get_viewer(request: Request, store: StoreDep) -> Identity | None:
    ident = parse_identity(request.headers)
    if ident is not None:
        store.ensure_user(ident.user)
    return ident


Viewer = Annotated[Identity | None, Depends(get_viewer)]


async def get_caller(ident: Viewer) -> Identity:
    if ident is None:
        raise ProblemError(401, "this endpoint requires a signed-in user (X-Tsgate-User)")
    return ident


Caller = Annotated[Identity, Depends(get_caller)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=128)]


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise ProblemError(400, "Content-Length is not valid")
    if int(declared) > limit:
        raise ProblemError(413, f"request body exceeds {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole body (streamed), failing with 413 as soon as it exceeds limit."""
    _declared_length(request, limit)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ProblemError(413, f"request body exceeds {limit} bytes")
    return bytes(buf)


async def digest_body(request: Request, limit: int) -> tuple[int, str]:
    """Stream the body through sha256 without buffering it; returns (length, hex digest)."""
    _declared_length(request, limit)
    sha, length = hashlib.sha256(), 0
    async for chunk in request.stream():
        length += len(chunk)
        if length > limit:
            raise ProblemError(413, f"request body exceeds {limit} bytes")
        sha.update(chunk)
    return length, sha.hexdigest()


async def parse_json(request: Request, model: type[M]) -> M:
    """Validate a JSON body: 415 wrong type, 413 too big, 400 malformed JSON, 422 invalid fields."""
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ProblemError(415, "request body must be application/json")
    raw = await read_body(request, JSON_BODY_LIMIT)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = _clean_errors(exc.errors(include_url=False, include_context=False, include_input=False))
        if any(e["type"] == "json_invalid" for e in errors):
            raise ProblemError(400, "request body is not valid JSON") from None
        raise ProblemError(422, "request body failed validation", {"errors": errors}) from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class NewUser(_Body):
    username: str = Field(min_length=1, max_length=64)
    display_name: str | None = Field(default=None, min_length=1, max_length=DISPLAY_NAME_MAX)


class NewPost(_Body):
    body: str = Field(min_length=1, max_length=POST_BODY_MAX)


class NewComment(_Body):
    body: str = Field(min_length=1, max_length=COMMENT_BODY_MAX)


# -- debug endpoints ------------------------------------------------------------
@router.get("/api/health")
async def health() -> JSONResponse:
    return JSONResponse({"ok": True})


@router.api_route("/api/debug/echo", methods=ECHO_METHODS)
@router.api_route("/api/debug/echo/{rest:path}", methods=ECHO_METHODS)
async def echo(request: Request) -> JSONResponse:
    length, digest = await digest_body(request, DEBUG_BODY_LIMIT)
    scope = request.scope
    client = scope.get("client")
    return JSONResponse(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
            "query": bytes(scope.get("query_string", b"")).decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": length,
            "body_sha256": digest,
            "client": client[0] if client else None,
        }
    )


@router.get("/api/debug/stream")
async def sse(
    n: Annotated[int, Query(ge=0, le=10_000)] = 5,
    interval: Annotated[float, Query(ge=0, le=60)] = 0.05,
) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            if i:
                await asyncio.sleep(interval)
            yield f"data: {i}\n\n".encode()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/api/debug/slow")
async def slow(seconds: Annotated[float, Query(ge=0, le=300)] = 2.0) -> JSONResponse:
    await asyncio.sleep(seconds)
    return JSONResponse({"ok": True})


@router.get("/api/debug/bytes")
async def byte_stream(
    n: Annotated[int, Query(ge=0, le=DEBUG_BODY_LIMIT)] = 1024 * 1024,
    content_length: bool = False,
) -> StreamingResponse:
    """n bytes where byte i == i % 256, in 64 KiB chunks; chunked unless content_length=true."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, n, CHUNK_SIZE):
            yield _PATTERN_BLOCK[: min(CHUNK_SIZE, n - start)]

    headers = {"Content-Length": str(n)} if content_length else None
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


@router.post("/api/debug/upload")
async def upload(request: Request) -> JSONResponse:
    length, digest = await digest_body(request, DEBUG_BODY_LIMIT)
    return JSONResponse({"body_length": length, "body_sha256": digest})


@router.websocket("/api/debug/ws")
async def ws_echo(websocket: WebSocket) -> None:
    offered = list(websocket.scope.get("subprotocols") or [])
    await websocket.accept(subprotocol=offered[0] if offered else None)
    hello = {
        "user": websocket.headers.get("x-tsgate-user"),
        "roles": websocket.headers.get("x-tsgate-roles"),
        "path": websocket.scope["path"],
        "query": bytes(websocket.scope.get("query_string", b"")).decode("latin-1"),
    }
    await websocket.send_text(json.dumps(hello))
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text("echo:" + message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])


# -- social API -----------------------------------------------------------------
@router.post("/api/users")
async def create_user(
    request: Request, store: StoreDep, ident: Annotated[Identity | None, Depends(get_identity)]
) -> JSONResponse:
    if ident is None:
        raise ProblemError(401, "creating a profile requires a signed-in user (X-Tsgate-User)")
    data = await parse_json(request, NewUser)
    if data.username != ident.user:
        raise ProblemError(403, "you can only create your own profile")
    created = store.ensure_user(ident.user, data.display_name)
    return JSONResponse(store.profile(ident.user), status_code=201 if created else 200)


@router.get("/api/users/{username}")
async def get_user(username: str, store: StoreDep, _: Viewer) -> JSONResponse:
    return JSONResponse(store.profile(username))


@router.get("/api/users/{username}/posts")
async def user_posts(
    username: str, store: StoreDep, _: Viewer, limit: Limit = 20, cursor: Cursor = None
) -> JSONResponse:
    return JSONResponse(store.user_posts(username, limit, cursor).to_json())


@router.post("/api/users/{username}/follow")
async def follow(username: str, store: StoreDep, me: Caller) -> JSONResponse:
    store.set_follow(me.user, username, True)
    return JSONResponse({"following": True})


@router.delete("/api/users/{username}/follow")
async def unfollow(username: str, store: StoreDep, me: Caller) -> JSONResponse:
    store.set_follow(me.user, username, False)
    return JSONResponse({"following": False})


@router.get("/api/users/{username}/followers")
async def followers(
    username: str, store: StoreDep, _: Viewer, limit: Limit = 20, cursor: Cursor = None
) -> JSONResponse:
    return JSONResponse(store.follow_list(username, "followers", limit, cursor).to_json())


@router.get("/api/users/{username}/following")
async def following(
    username: str, store: StoreDep, _: Viewer, limit: Limit = 20, cursor: Cursor = None
) -> JSONResponse:
    return JSONResponse(store.follow_list(username, "following", limit, cursor).to_json())


@router.post("/api/posts")
async def create_post(request: Request, store: StoreDep, me: Caller) -> JSONResponse:
    data = await parse_json(request, NewPost)
    return JSONResponse(store.create_post(me.user, data.body).to_json(), status_code=201)


@router.get("/api/posts/{post_id}")
async def get_post(post_id: int, store: StoreDep, _: Viewer) -> JSONResponse:
    return JSONResponse(store.get_post(post_id).to_json())


@router.delete("/api/posts/{post_id}")
async def delete_post(post_id: int, store: StoreDep, me: Caller) -> Response:
    store.delete_post(post_id, me.user, me.roles)
    return Response(status_code=204)


@router.post("/api/posts/{post_id}/comments")
async def create_comment(post_id: int, request: Request, store: StoreDep, me: Caller) -> JSONResponse:
    store.get_post(post_id)  # 404 before reading the body
    data = await parse_json(request, NewComment)
    return JSONResponse(store.create_comment(post_id, me.user, data.body).to_json(), status_code=201)


@router.get("/api/posts/{post_id}/comments")
async def list_comments(
    post_id: int, store: StoreDep, _: Viewer, limit: Limit = 20, cursor: Cursor = None
) -> JSONResponse:
    return JSONResponse(store.comments(post_id, limit, cursor).to_json())


@router.delete("/api/comments/{comment_id}")
async def delete_comment(comment_id: int, store: StoreDep, me: Caller) -> Response:
    store.delete_comment(comment_id, me.user, me.roles)
    return Response(status_code=204)


@router.get("/api/feed")
async def feed(store: StoreDep, me: Caller, limit: Limit = 20, cursor: Cursor = None) -> JSONResponse:
    return JSONResponse(store.feed(me.user, limit, cursor).to_json())


def create_app() -> FastAPI:
    """A fresh demo backend with its own empty in-memory store."""
    app = FastAPI(
        title="tsgate demo backend",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.store = Store()
    app.include_router(router)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_crash)
    return app


def run(host: str, port: int) -> None:
    """Serve a fresh demo backend on host:port until interrupted (blocking)."""
    uvicorn.run(
        create_app(),
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools",
        ws="websockets-sansio",
        access_log=False,
        # The echo endpoint must report the real TCP peer and headers exactly as received,
        # so uvicorn must not rewrite the client from X-Forwarded-For.
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
