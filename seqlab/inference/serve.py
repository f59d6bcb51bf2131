"""`seqlab serve`: an HTTP JSON translation service (FastAPI + uvicorn, the `serve` extra).

    POST /translate  {"text": ["...", ...], "beam_size": 5}  ->  200 {"translations": ["...", ...]}
    GET  /health                                              ->  200 {"status": "ok"}

One translation per input line, in order; an empty (or blank) line gives an empty one. `beam_size`
is optional (the model's default). Requests arriving together are translated together
(`seqlab.inference.batching.Batcher`). Errors are JSON objects with an "error" message: 400 for a
body that is not JSON, 422 for JSON of the wrong shape (no "text" list, a non-string line, a beam
size that is not an integer from 1 to `max_beam_size`, an unknown key), 413 beyond the limits on
lines per request and characters per line (and, before the body is read, for a body longer than
those limits allow), 500 when the engine fails, 503 while stopping; the server serves on after
each. On SIGTERM uvicorn stops accepting connections, finishes the requests in flight, then the
batcher drains and the process exits 0. One log line per request on stderr.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

try:  # the `serve` extra
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
except ImportError as error:
    raise ImportError(
        f"seqlab.inference.serve needs {error.name}: pip install 'seqlab[serve]'", name=error.name
    ) from error

from seqlab.errors import SeqlabError
from seqlab.inference.batching import Batcher, ShuttingDown

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """The service's knobs (`seqlab serve --help` names each).

    Attributes:
        max_batch_tokens: token budget of a batch (words + 1 per line, summed).
        max_wait_ms: how long a request may wait for batch mates; 0: only those already queued.
        batching: False: each request translated alone (for comparison).
        max_lines: lines per request; more is a 413.
        max_chars: characters per line; more is a 413.
        max_beam_size: largest beam a request may ask for; more is a 422.
        max_body_bytes: the longest body read; a longer one is a 413 before it is held in
            memory. None: the longest a request within `max_lines` and `max_chars` can be
            (each character JSON-escaped as 6 bytes), 60 MB at the defaults.
    """

    max_batch_tokens: int = 2048
    max_wait_ms: float = 10.0
    batching: bool = True
    max_lines: int = 1000
    max_chars: int = 10_000
    max_beam_size: int = 32
    max_body_bytes: int | None = None

    @property
    def body_limit(self) -> int:
        """`max_body_bytes`, or the size of the largest request the other limits admit."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_lines * (6 * self.max_chars + 4) + 4096


class TranslateRequest(BaseModel):
    """The body of POST /translate."""

    model_config = ConfigDict(extra="forbid")

    text: list[StrictStr]
    beam_size: StrictInt | None = Field(default=None, ge=1)


def _error(status: int, message: str, **extra) -> JSONResponse:
    """The JSON error response, logged: the one log line of a refused or failed request."""
    logger.warning("refused a request (%d): %s", status, message)
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, else 422 naming each wrong key."""
    return _classify(exc.errors())


def _classify(errors: list) -> JSONResponse:
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = errors[0].get("ctx", {}).get("error", "")
        return _error(400, f"the body is not valid JSON: {reason}".rstrip(": "))
    if (
        len(errors) == 1
        and errors[0].get("loc") == ("body",)
        and isinstance(errors[0].get("input"), (str, bytes))
    ):
        return _error(
            400, "the body is not read as JSON: send it with Content-Type: application/json"
        )
    messages = []
    for e in errors:
        where = ".".join(str(part) for part in e.get("loc", ()) if part != "body")
        messages.append(f"{where or 'body'}: {e.get('msg')}")
    return _error(422, "; ".join(messages), detail=jsonable_encoder(errors))


def _limit_error(body: TranslateRequest, settings: ServeSettings) -> JSONResponse | None:
    """The 413 or 422 for a well-formed request beyond the limits, else None."""
    if len(body.text) > settings.max_lines:
        return _error(413, f"{len(body.text)} lines; at most {settings.max_lines} per request")
    for i, line in enumerate(body.text):
        if len(line) > settings.max_chars:
            return _error(
                413, f"text[{i}] has {len(line)} characters; at most {settings.max_chars}"
            )
    if body.beam_size is not None and body.beam_size > settings.max_beam_size:
        return _error(422, f"beam_size: {body.beam_size} is above {settings.max_beam_size}")
    return None


class _BodyTooLong(HTTPException):
    """A body past the limit. An HTTPException, so FastAPI passes it on from reading the body
    (any other error there becomes its 400) to the handler that answers with our 413."""

    def __init__(self, limit: int, length: int | None = None):
        size = f"{length} bytes" if length is not None else f"more than {limit} bytes"
        super().__init__(413, f"the body has {size}; at most {limit}")


class _BodyLimit:
    """ASGI middleware: a 413 for a request body longer than `limit` bytes, refused from its
    Content-Length before any of it is read, or as soon as a chunked body passes the limit, so
    that a huge body is never held whole (uvicorn sets no limit; Starlette's own
    `RequestBodyLimitMiddleware` is recent and answers in plain text)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            too_long = _BodyTooLong(self.limit, int(declared))
            return await _error(413, too_long.detail)(scope, receive, send)
        read = 0

        async def limited_receive():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise _BodyTooLong(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def create_app(translator, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving `translator` (anything with `Translator`'s `translate`
    and `decode`, e.g. from `seqlab.inference.engines.open_translator`)."""
    settings = settings or ServeSettings()
    default_beam = translator.decode.beam_size

    def translate(lines: list[str], beam: int) -> list[str]:  # in the worker thread
        results = translator.translate(lines, beam_size=beam, max_tokens=settings.max_batch_tokens)
        return [hyps[0].text if hyps else "" for hyps in results]

    batcher = Batcher(
        translate,
        max_tokens=settings.max_batch_tokens,
        max_wait=settings.max_wait_ms / 1000,
        batching=settings.batching,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.close()  # after uvicorn finished the requests in flight
        logger.info("stopped after %d batches", batcher.batches)

    app = FastAPI(title="seqlab", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(_BodyLimit, limit=settings.body_limit)
    app.add_exception_handler(_BodyTooLong, lambda request, exc: _error(413, exc.detail))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/translate")
    async def translate_endpoint(body: TranslateRequest):
        start = time.perf_counter()
        rejected = _limit_error(body, settings)
        if rejected is not None:
            return rejected
        beam = body.beam_size or default_beam
        try:
            texts = await batcher.translate(body.text, beam)
        except ShuttingDown as error:
            return _error(503, str(error))
        except Exception as error:
            return _error(500, f"translation failed: {error}")
        logger.info(
            "translate: %d lines, %d chars, beam %d, %.1f ms",
            len(body.text), sum(map(len, body.text)), beam, 1000 * (time.perf_counter() - start),
        )  # fmt: skip
        return {"translations": texts}

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), so that a taken port is a clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise SeqlabError(f"cannot listen on {host}:{port}: {error}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise SeqlabError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def serve(
    translator,
    settings: ServeSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> int:
    """Serve `translator` over HTTP until SIGTERM or Ctrl-C; 0 after a graceful stop.

    Logs "serving on http://HOST:PORT" once the port is bound (with the port chosen for 0).
    """
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(translator, settings), log_level=log_level, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM gracefully, then raises it again under the handler it found in
    # place: this one makes that a no-op, so the process exits 0 rather than killed by SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        logger.info("serving on http://%s:%d", f"[{host}]" if ":" in host else host, bound)
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0 if server.started else 1
