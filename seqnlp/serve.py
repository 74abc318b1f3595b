"""HTTP API and demo page over saved runs (the optional extra `serve`: Starlette, pydantic, uvicorn).

    python -m seqnlp.serve --model runs/sentiment-... --model shakespeare=runs/generation-... [--port 8000]

Endpoints (JSON; errors are {"error": message, "field": name} with a 4xx status):
    GET  /                         the demo page (seqnlp/serve.html)
    GET  /health                   {"status": "ok", "models": N, "batches": {NAME: {"calls", "texts"}}}
    GET  /models, /models/NAME     each model's name, task, operation, benchmark, scores and config
    POST /models/NAME/classify     {"texts": [...]} → {"results": [{"label", "probabilities"}]}
    POST /models/NAME/generate     {"prime", "length", "temperature", "top_k", "top_p", "seed"} → server-sent
                                   events: start {seed}, token {text} per character, done {text}
    POST /models/NAME/translate    {"texts", "beam_size", "attention": bool} → {"results": [{"translation", ...}]}
    POST /models/NAME/tag          {"texts": [...]} → {"results": [{"tokens", "entities"}]}

Concurrent classify / translate / tag requests to one model are batched: they wait at most --max-wait-ms for
others and share one forward pass of at most --max-batch texts. Every model call runs on one compute thread,
so requests never race inside torch, and the event loop keeps accepting (and batching) while it computes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from seqnlp.config import add_flags, opt, resolve
from seqnlp.decoding import MAX_TEMPERATURE, MIN_TEMPERATURE, MIN_TOP_P
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.predictor import Predictor


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen, how to batch, and what one request may ask for (flags of python -m seqnlp.serve)."""

    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8000, "port to listen on", min=0, max=65535)
    max_batch: int = opt(32, "most texts one forward pass takes (1 = no batching)", min=1)
    max_wait_ms: float = opt(5.0, "longest a request waits for others to share its forward pass", min=0, max=10_000)
    max_body_bytes: int = opt(1_000_000, "largest request body in bytes", min=1)
    max_texts: int = opt(64, "most texts in one request", min=1)
    max_chars: int = opt(2000, "most characters in one text or prime", min=1)
    max_length: int = opt(2000, "most characters one generate request may sample", min=0)
    max_beam: int = opt(16, "largest beam size a translate request may ask for", min=1)
    log_level: str = opt("info", "uvicorn's log level", choices=("critical", "error", "warning", "info", "debug"))


class ApiError(Exception):
    """A bad request: answered with `status` and {"error": message, "field": field}."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


# ====================================================================== dynamic batching

class Batcher:
    """Runs `fn(items, key)` once for the items of concurrent requests.

    A batch starts with the first waiting request and closes when it holds `max_batch` items or `max_wait`
    seconds later; a request is never split (one larger than `max_batch` runs alone, a request that would
    overflow the batch starts the next one). Requests with different keys (options such as the beam size)
    share the batch's turn but not a call. When a call fails with a SeqnlpError its requests are run one by
    one, so a bad request fails alone.
    """

    def __init__(self, fn: Callable[[list[Any], Any], list[Any]], run: Callable[..., Any], max_batch: int,
                 max_wait: float) -> None:
        self.fn, self.run, self.max_batch, self.max_wait = fn, run, max_batch, max_wait
        self.queue: asyncio.Queue | None = None  # made on first use, in the server's event loop
        self.worker: asyncio.Task | None = None
        self.calls = self.items = 0  # forward passes made and the items they took (GET /health shows them)

    async def __call__(self, items: list[Any], key: Any = None) -> list[Any]:
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done() or self.worker.get_loop() is not loop:  # e.g. a new test client
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._loop())
        future = loop.create_future()
        self.queue.put_nowait((items, key, future))  # type: ignore[union-attr]
        return await future

    async def _loop(self) -> None:
        loop, queue, carry = asyncio.get_running_loop(), self.queue, None
        assert queue is not None
        while True:
            batch = [carry or await queue.get()]
            carry, size, deadline = None, len(batch[0][0]), loop.time() + self.max_wait
            while size < self.max_batch:
                try:  # take what is already waiting before waiting for more
                    request = queue.get_nowait() if not queue.empty() else await asyncio.wait_for(
                        queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                if request[2].done():  # its client went away: nothing to compute
                    continue
                if size + len(request[0]) > self.max_batch:
                    carry = request
                    break
                batch.append(request)
                size += len(request[0])
            for key in dict.fromkeys(k for _, k, _ in batch):
                await self._call([r for r in batch if r[1] == key], key)

    async def _call(self, requests: list[tuple[list[Any], Any, asyncio.Future]], key: Any) -> None:
        items = [item for r in requests for item in r[0]]
        self.calls, self.items = self.calls + 1, self.items + len(items)
        try:
            results = await self.run(self.fn, items, key)
        except SeqnlpError as err:
            if len(requests) > 1:  # find the bad request: each alone
                for request in requests:
                    await self._call([request], key)
                return
            results = err
        except Exception as err:  # not the request's fault: every request of the call gets a 500
            results = err
        start = 0
        for mine, _, future in requests:
            if not future.done():  # done: the client went away
                if isinstance(results, BaseException):
                    future.set_exception(results)
                else:
                    future.set_result(results[start:start + len(mine)])
            start += len(mine)


# ====================================================================== the app

def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def create_app(predictors: list[Predictor], config: ServeConfig | None = None) -> Any:
    """The ASGI app (Starlette) serving `predictors` under their names, with `config`'s limits and batching."""
    from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    cfg = config or ServeConfig()
    models = {p.name: p for p in predictors}
    if len(models) != len(predictors):
        raise SeqnlpError("two models have the same name; name them with NAME=RUN_DIR")
    compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqnlp-compute")

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(compute, fn, *args)

    def _not_blank(text: str) -> str:
        if not text.strip():
            raise ValueError("must hold a non-blank text")
        return text

    # Request bodies: strict JSON types (no "3" for 3, no true for 1), unknown fields refused (a typo is an error).
    Text = Annotated[str, Field(min_length=1, max_length=cfg.max_chars), AfterValidator(_not_blank)]
    Texts = Annotated[list[Text], Field(min_length=1, max_length=cfg.max_texts)]
    strict = ConfigDict(extra="forbid", strict=True)

    class TextsRequest(BaseModel):
        model_config = strict
        texts: Texts

    class TranslateRequest(TextsRequest):
        beam_size: Annotated[int, Field(ge=1, le=cfg.max_beam)] | None = None
        attention: bool = False

    class GenerateRequest(BaseModel):
        model_config = strict
        prime: Annotated[str, Field(max_length=cfg.max_chars)] = ""
        length: Annotated[int, Field(ge=0, le=cfg.max_length)] = 200
        temperature: Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False)] = 1.0
        top_k: Annotated[int, Field(ge=1)] | None = None
        top_p: Annotated[float, Field(ge=MIN_TOP_P, le=1, allow_inf_nan=False)] | None = None
        seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None

    def batched(p: Predictor) -> Batcher:
        calls = {"classify": lambda texts, key: p.classify(texts), "tag": lambda texts, key: p.tag(texts),
                 "translate": lambda texts, key: p.translate(texts, beam_size=key[0], attention=key[1])}
        return Batcher(calls[p.operation], run, cfg.max_batch, cfg.max_wait_ms / 1000) if p.operation in calls else None

    batchers = {name: batched(p) for name, p in models.items()}

    async def body_of(request: Request, schema: type[BaseModel]) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "content-type", f"send the body as JSON (Content-Type: application/json), not {kind or 'nothing'!r}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise ApiError(413, "body", f"the body has {int(declared):,} bytes, over the limit of {cfg.max_body_bytes:,}")
        body = bytearray()
        async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise ApiError(413, "body", f"the body is over the limit of {cfg.max_body_bytes:,} bytes")
        try:
            return schema.model_validate_json(bytes(body))
        except ValidationError as err:
            first = err.errors()[0]
            if first["type"] == "json_invalid":
                raise ApiError(400, "body", f"the body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}") from None
            field = _field(tuple(first["loc"]))
            raise ApiError(422, field, f"{field}: {first['msg'].removeprefix('Value error, ')}") from None

    def model_of(name: str) -> Predictor:
        if name not in models:
            raise ApiError(404, "model", f"no model named {name!r}; loaded: {', '.join(models)}")
        return models[name]

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(resources.files("seqnlp").joinpath("serve.html").read_text(encoding="utf-8"))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": len(models), "batches": {
            name: {"calls": b.calls, "texts": b.items} for name, b in batchers.items() if b is not None}})

    async def listing(request: Request) -> JSONResponse:
        return JSONResponse({"models": [p.info() for p in models.values()]})

    async def one(request: Request) -> JSONResponse:
        return JSONResponse(model_of(request.path_params["name"]).info())

    async def call(request: Request) -> Any:
        p, operation = model_of(request.path_params["name"]), request.path_params["operation"]
        if operation not in ("classify", "generate", "translate", "tag"):
            raise ApiError(404, "operation", f"unknown operation {operation!r}; model {p.name!r} answers {p.operation}")
        if operation != p.operation:
            raise ApiError(404, "operation", f"model {p.name!r} is a {p.task} model: POST /models/{p.name}/{p.operation}")
        if operation == "generate":
            return await generate(p, await body_of(request, GenerateRequest))
        req = await body_of(request, TranslateRequest if operation == "translate" else TextsRequest)
        key = (req.beam_size, req.attention) if operation == "translate" else None
        try:
            results = await batchers[p.name](req.texts, key)
        except SeqnlpError as err:
            raise ApiError(422, "texts", str(err)) from None
        return JSONResponse({"model": p.name, "results": results})

    async def generate(p: Predictor, req: Any) -> StreamingResponse:
        seed = req.seed if req.seed is not None else random.randrange(2**31)  # told to the client, to repeat it
        try:
            stream: Iterator[str] = await run(p.generate_stream, req.prime, req.length, req.temperature, req.top_k,
                                              req.top_p, seed)
        except SeqnlpError as err:
            raise ApiError(422, "prime" if "prime" in str(err) else "body", str(err)) from None

        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events() -> Any:
            yield event("start", {"model": p.name, "seed": seed, "prime": req.prime})
            pieces: list[str] = []
            try:
                while (piece := await run(next, stream, None)) is not None:
                    pieces.append(piece)
                    yield event("token", {"text": piece})
            except SeqnlpError as err:  # e.g. a broken model: the stream has begun, so say it in the stream
                yield event("error", {"error": str(err)})
                return
            yield event("done", {"text": req.prime + "".join(pieces)})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)

    async def http_error(request: Request, err: HTTPException) -> JSONResponse:  # 404 / 405 from the router
        return JSONResponse({"error": f"{request.method} {request.url.path}: {err.detail}", "field": None},
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    async def server_error(request: Request, err: Exception) -> JSONResponse:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return JSONResponse({"error": "internal error (see the server's log)", "field": None}, status_code=500)

    app = Starlette(routes=[Route("/", page), Route("/health", health), Route("/models", listing),
                            Route("/models/{name}", one), Route("/models/{name}/{operation}", call, methods=["POST"])],
                    exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error})
    app.state.models, app.state.batchers, app.state.config = models, batchers, cfg
    return app


# ====================================================================== the command line

def _named(value: str) -> tuple[str | None, str]:
    """'NAME=RUN_DIR' → (NAME, RUN_DIR); a plain RUN_DIR is named after its folder."""
    name, sep, path = value.partition("=")
    return (name, path) if sep and name and "/" not in name else (None, value)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """python -m seqnlp.serve --model [NAME=]RUN_DIR [--model ...] [--host H] [--port P] [limits]."""
    parser = argparse.ArgumentParser(prog="python -m seqnlp.serve", description="Serve saved runs over HTTP: "
                                     "a JSON API per model, with dynamic batching, and a demo page at /.")
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]RUN_DIR",
                        help="a run folder to serve (repeat for more); NAME defaults to the folder's name")
    add_flags(parser, ServeConfig)
    args = parser.parse_args(argv)
    cfg = resolve(ServeConfig, args)
    try:
        import pydantic  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise SeqnlpError(f"serving needs the serve extra ({err.name} is missing): pip install 'seqnlp[serve]'") from None
    app = create_app([Predictor.load(path, name) for name, path in map(_named, args.model)], cfg)
    for p in app.state.models.values():
        print(f"model {p.name}: {p.task}, POST /models/{p.name}/{p.operation}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
