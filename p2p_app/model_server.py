"""Generation as a service: the configured model registry over HTTP (``p2p serve-models``).

An OpenAI-images-style API, so the web tier (or several web servers, or a Space) can hold no weights and share one
GPU machine; a config entry with ``source = "http://host:port"`` (:class:`~generators.remote.RemoteGenerator`)
calls it:

- ``GET  /healthz`` → ``{"ok": true, "models": N}`` (no token needed);
- ``GET  /v1/models`` and ``GET /v1/models/{name}`` → each model's name, family, modality, whether its images
  are grey, its effective default parameters and whether its requests are batched;
- ``POST /v1/images/generations`` with ``{"model", "prompt", "seed", "size": "WxH", "steps", "params": {…},
  "response_format": "b64_json" | "png"}`` → ``{"created", "data": [{"b64_json", "seed", "prompt", "params",
  "seconds"}]}`` (or the PNG bytes, with the seed and parameters in ``X-P2P-*`` headers). ``seed`` is required:
  the service never picks one, so every image can be made again;
- ``POST /v1/tokens`` with ``{"model", "prompt"}`` → the prompt's length per text encoder (the arena's counter).

Bad requests get a 4xx answer with ``{"error": {"message", "type", "param"}}`` naming what is wrong; a failed
generation 500, a model that cannot load 503. With a token (the ``model_token`` setting) every route but
``/healthz`` needs ``Authorization: Bearer <token>``.

**Batching.** Requests for one model wait in that model's queue; while its pipeline runs, new requests gather,
and requests with identical parameters are then run as one pipeline call (a list of prompts, one CPU
``torch.Generator`` per seed) — but only for a model where that gives the same pixels as one call per image.
``batching="auto"`` checks this once per model after it loads (three prompts one at a time, then together,
comparing the pipeline's float outputs bit for bit) and batches only when they are identical; on this CPU they
are not for any family (batched kernels round differently: ~1e-6, which flips a few 8-bit values by one), so
there the service runs one image per call. ``"off"`` never batches; ``"on"`` batches without
the check (for measuring only: a batched image may then differ from the in-process one by rounding).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from generators import GenerationError, ModelLoadError, Registry, check_seed
from generators.families import GREYSCALE

log = logging.getLogger(__name__)

BATCHING_MODES = ("auto", "off", "on")
MAX_BODY_BYTES = 64 * 1024  # a request is a prompt and a few numbers
MAX_BATCH = 8
BATCH_WINDOW_S = 0.01  # how long a lone request waits for company when its model batches
REQUEST_KEYS = ("model", "prompt", "seed", "size", "steps", "n", "params", "response_format")
PROBE_PROMPTS = ("probe image one", "a second, longer probe prompt for the batch check", "third")
PROBE_SEEDS = (11, 1234567, 2)


class RequestError(ValueError):
    """A request the service refuses: HTTP ``status`` with a message naming the field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def error_response(message: str, status: int, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param}}, status_code=status)


@dataclass
class _Job:
    prompt: str
    seed: int
    params: dict[str, Any]  # what the caller asked for (validated); the generator merges its defaults
    group: str  # jobs of one group can share a pipeline call (same effective parameters)
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What a model's queue has done: pipeline calls and images (calls < images means batching happened)."""

    calls: int = 0
    images: int = 0
    largest: int = 0


class ModelQueue:
    """One model's worker thread: runs its jobs, several at once where batching is on."""

    def __init__(self, generator: Any, batching: str, window_s: float = BATCH_WINDOW_S, max_batch: int = MAX_BATCH):
        self.generator = generator
        self.mode = batching
        self.batches: bool | None = {"on": True, "off": False}.get(batching)  # "auto": None until probed
        self.window_s = window_s
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._held: list[_Job] = []  # taken from the queue but not of the group being run
        self._thread = threading.Thread(target=self._work, name=f"p2p-model-{generator.name}", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> Future:
        self._jobs.put(job)
        return job.future

    def close(self) -> None:
        self._jobs.put(None)

    def probe(self) -> bool:
        """Whether one batched call gives bit-identical outputs to one call per prompt (``auto``: sets ``batches``).
        The generator compares the pipeline's float outputs (``batch_invariant``), which catches rounding
        differences too small to flip a pixel for the probe prompts but not for others."""
        gen = self.generator
        check = getattr(gen, "batch_invariant", None)
        same = bool(check(list(PROBE_PROMPTS), list(PROBE_SEEDS))) if check is not None else False
        if self.mode == "auto":
            self.batches = same
        log.info("model %s: a batched call %s one call per image%s", gen.name,
                 "gives the same outputs as" if same else "does NOT give the same outputs as",
                 "" if same or self.mode != "auto" else "; its requests run one at a time")
        return same

    def _next_group(self) -> list[_Job] | None:
        first = self._held.pop(0) if self._held else self._jobs.get()
        if first is None:
            return None
        group = [first]
        if not self.batches:
            return group
        deadline = time.monotonic() + self.window_s
        keep = []
        for job in self._held:  # held jobs first: they came earlier
            (group if job.group == first.group and len(group) < self.max_batch else keep).append(job)
        self._held = keep
        while len(group) < self.max_batch:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this group
                break
            (group if job.group == first.group else self._held).append(job)
        return group

    def _work(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            try:
                if len(group) == 1:
                    results = [self.generator.generate(group[0].prompt, group[0].seed, **group[0].params)]
                else:
                    results = self.generator.generate_many(
                        [j.prompt for j in group], [j.seed for j in group], **group[0].params
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for job in group:
                    job.future.set_exception(exc)
                continue
            self.stats.calls += 1
            self.stats.images += len(group)
            self.stats.largest = max(self.stats.largest, len(group))
            for job, result in zip(group, results):
                job.future.set_result(result)


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # lossless: the pixels the model made
    return buf.getvalue()


class ModelService:
    """The registry's models behind the HTTP API above (:meth:`asgi`), one :class:`ModelQueue` per model."""

    def __init__(
        self,
        registry: Registry,
        *,
        token: str = "",
        batching: str = "auto",
        window_s: float = BATCH_WINDOW_S,
        max_batch: int = MAX_BATCH,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {', '.join(BATCHING_MODES)}, got {batching!r}")
        remote = [name for name in registry.names() if registry.spec(name).is_remote]
        if remote:
            raise ValueError(f"model(s) {', '.join(remote)} are themselves served by a generation service: "
                             "serve-models needs entries with a local source (a folder, a hub id or tiny:<family>)")
        self.registry = registry
        self.token = token or ""
        self.batching = batching
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_body = max_body
        self._queues: dict[str, ModelQueue] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()  # set once load_all has run (failures included)
        self.load_error = ""

    # ------------------------------------------------------------------ models
    def queue(self, name: str) -> ModelQueue:
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                q = self._queues[name] = ModelQueue(self.registry.get(name), self.batching, self.window_s,
                                                    self.max_batch)
            return q

    def queues(self) -> dict[str, ModelQueue]:
        """The model queues made so far, by model name (their ``stats`` and ``batches``)."""
        with self._lock:
            return dict(self._queues)

    def load_all(self) -> None:
        """Load every model, then (``batching="auto"``) check each for batch-identical images. Never raises: a
        failure is kept in ``load_error`` and answered as 503 for that model."""
        try:
            self.registry.load_all()
        except Exception as exc:  # noqa: BLE001 - reported; the models that loaded are served
            self.load_error = str(exc)
            log.error("%s", exc)
        if self.batching == "auto":
            for name in self.registry.names():
                try:
                    self.queue(name).probe()
                except Exception as exc:  # noqa: BLE001 - unprobed: not batched
                    log.warning("model %s: batch check failed (%s); its requests run one at a time", name, exc)
        self.ready.set()

    def model_info(self, name: str) -> dict[str, Any]:
        spec = self.registry.spec(name)
        generator = self.registry.get(name)
        return {
            "id": name,
            "object": "model",
            "owned_by": "p2p",
            "family": spec.family,
            "modality": spec.modality,
            "greyscale": spec.is_greyscale,
            "defaults": generator.effective_params(),
            "batching": self.queue(name).batches,
        }

    def close(self) -> None:
        with self._lock:
            queues = list(self._queues.values())
        for q in queues:
            q.close()

    # ------------------------------------------------------------------ requests
    def parse(self, body: Any) -> tuple[str, str, int, dict[str, Any], str]:
        """(model, prompt, seed, params, response format) of a generation request, or RequestError."""
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        unknown = [k for k in body if k not in REQUEST_KEYS]
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(REQUEST_KEYS)}",
                               param=unknown[0])
        model = self.model_name(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("'prompt' must be non-empty text", param="prompt")
        if "seed" not in body:
            raise RequestError("'seed' is required (an integer 0 .. 2**63-1): the service never picks one, so every "
                               "image can be made again", param="seed")
        try:
            seed = check_seed(body["seed"])
        except ValueError as exc:
            raise RequestError(str(exc), param="seed") from None
        if body.get("n", 1) != 1 or isinstance(body.get("n"), bool):
            raise RequestError("'n' must be 1: send one request per image (each with its own seed)", param="n")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise RequestError("'params' must be an object of generation parameters", param="params")
        params = dict(params)
        if GREYSCALE in params:
            raise RequestError("'greyscale' is set in the service's model entry, not per request", param="params")
        if "size" in body:
            size = body["size"]
            parts = size.lower().split("x") if isinstance(size, str) else []
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise RequestError(f"'size' must be 'WIDTHxHEIGHT' in pixels, e.g. '512x512', got {size!r}",
                                   param="size")
            for key, value in zip(("width", "height"), parts):
                if key in params and params[key] != int(value):
                    raise RequestError(f"'size' and params.{key} disagree", param="size")
                params[key] = int(value)
        if "steps" in body:
            if "num_inference_steps" in params and params["num_inference_steps"] != body["steps"]:
                raise RequestError("'steps' and params.num_inference_steps disagree", param="steps")
            params["num_inference_steps"] = body["steps"]
        fmt = body.get("response_format", "b64_json")
        if fmt not in ("b64_json", "png"):
            raise RequestError(f"'response_format' must be 'b64_json' or 'png', got {fmt!r}", param="response_format")
        return model, prompt, seed, params, fmt

    def model_name(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("'model' must name a served model", param="model")
        if model not in self.registry:
            raise RequestError(f"unknown model {model!r}; served models: {', '.join(self.registry.names())}",
                               status=404, param="model")
        return model

    def check(self, model: str, prompt: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The normalised prompt and the effective parameters (blocking: may build or tokenize), or RequestError."""
        generator = self.registry.get(model)
        try:
            effective = generator.effective_params(**params)
            prompt = generator.check_prompt(prompt)
        except ValueError as exc:
            raise RequestError(str(exc), param="params") from None
        return prompt, effective

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def read_json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise RequestError(f"the request body is larger than {self.max_body} bytes", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise RequestError(f"the request body is larger than {self.max_body} bytes", status=413)
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON ({exc})") from None

    # ------------------------------------------------------------------ routes
    def asgi(self) -> Starlette:
        async def guarded(request: Request, handler) -> Response:
            if not self.authorized(request):
                response = error_response("a valid 'Authorization: Bearer <token>' header is required", 401)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            try:
                return await handler(request)
            except RequestError as exc:
                return error_response(str(exc), exc.status, exc.param)
            except ModelLoadError as exc:
                log.error("%s", exc)
                return error_response(f"the model cannot be loaded: {exc}", 503)
            except GenerationError as exc:
                log.error("%s", exc)
                return error_response(f"generation failed: {exc}", 500)
            except Exception as exc:  # noqa: BLE001 - a clear 500, the details in the log
                log.exception("request failed")
                return error_response(f"generation failed ({type(exc).__name__}: {exc})", 500)

        async def healthz(request: Request) -> Response:
            return JSONResponse({"ok": True, "models": len(self.registry), "ready": self.ready.is_set()})

        async def models(request: Request) -> Response:
            async def handle(request: Request) -> Response:
                data = [await asyncio.to_thread(self.model_info, n) for n in self.registry.names()]
                return JSONResponse({"object": "list", "data": data})
            return await guarded(request, handle)

        async def model(request: Request) -> Response:
            async def handle(request: Request) -> Response:
                name = self.model_name({"model": request.path_params["name"]})
                return JSONResponse(await asyncio.to_thread(self.model_info, name))
            return await guarded(request, handle)

        async def tokens(request: Request) -> Response:
            async def handle(request: Request) -> Response:
                body = await self.read_json(request)
                if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
                    raise RequestError("send {'model': name, 'prompt': text}", param="prompt")
                generator = self.registry.get(self.model_name(body))
                counts = await asyncio.to_thread(generator.prompt_tokens, body["prompt"])
                return JSONResponse({"counts": [{"encoder": c.encoder, "used": c.used, "limit": c.limit}
                                                for c in counts]})
            return await guarded(request, handle)

        async def generations(request: Request) -> Response:
            async def handle(request: Request) -> Response:
                model, prompt, seed, params, fmt = self.parse(await self.read_json(request))
                prompt, effective = await asyncio.to_thread(self.check, model, prompt, params)
                group = json.dumps(effective, sort_keys=True)
                job = _Job(prompt, seed, params, group)
                result = await asyncio.wrap_future(self.queue(model).submit(job))
                png = await asyncio.to_thread(png_bytes, result.image)
                meta = {"seed": result.seed, "prompt": result.prompt, "params": dict(result.params),
                        "seconds": round(result.seconds, 4)}
                if fmt == "png":
                    return Response(png, media_type="image/png", headers={
                        "X-P2P-Model": model, "X-P2P-Seed": str(result.seed),
                        "X-P2P-Params": json.dumps(meta["params"], sort_keys=True),
                    })
                b64 = base64.b64encode(png).decode("ascii")
                return JSONResponse({"created": int(time.time()), "model": model, "data": [{"b64_json": b64, **meta}]})
            return await guarded(request, handle)

        return Starlette(routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name:path}", model, methods=["GET"]),
            Route("/v1/tokens", tokens, methods=["POST"]),
            Route("/v1/images/generations", generations, methods=["POST"]),
        ])
