"""A generator that asks a generation service (``p2p serve-models``) for its images over HTTP.

A config entry whose ``source`` is a URL (``source = "http://gpu-host:8000"``) becomes a :class:`RemoteGenerator`:
the process holds no weights and imports neither torch nor diffusers. The service serves the model of the
same name; the entry's family, modality and greyscale must match the service's, which is checked on first
contact. Effective parameters are the service's defaults (its tiny or real sizes, its config overrides) merged
with this entry's ``params`` and the call's, checked here with the family's rules, so the cache key
(:func:`~generators.base.cache_key`) is the one the same model gives in-process and the service makes the image
with exactly those parameters (its answer repeats them and is refused otherwise).

Anything that goes wrong on the way (service down, time-out, an HTTP error, an answer that is not the PNG of the
requested size) raises :class:`~generators.base.BackendUnavailable` (a :class:`~generators.base.GenerationError`)
naming the model, the address and the cause. A request the service refuses as bad input (HTTP 400) raises
ValueError with the service's message, as the in-process generator would.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
from collections import OrderedDict
from typing import Any, Mapping

from urllib.parse import quote

import httpx
from PIL import Image, UnidentifiedImageError

from .base import (
    DEFAULT_TIMEOUT,
    BackendUnavailable,
    GenerationResult,
    Generator,
    ModelLoadError,
    TokenCount,
    check_modality,
    check_seed,
    is_url,
)
from .families import GREYSCALE, LORA_SCALE, get_family

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONNECT_TIMEOUT = 5.0
PING_TIMEOUT = 2.0
PING_KEEP_S = 5.0
_TOKEN_CACHE = 512  # prompts whose token counts are remembered (the live counter asks on every keystroke)


class RemoteGenerator(Generator):
    """The model ``name`` of the generation service at ``url`` behind the :class:`Generator` interface."""

    def __init__(
        self,
        name: str,
        family: str,
        modality: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        greyscale: bool | None = None,
        token: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model name must be non-empty text, got {name!r}")
        if not is_url(url):
            raise ValueError(f"model {name!r}: a generation service address starts with http:// or https://, got {url!r}")
        if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
            raise ValueError(f"model {name!r}: timeout must be a positive number of seconds, got {timeout!r}")
        self.name = name
        self.family = family
        self._family = get_family(family)
        self.modality = check_modality(modality)
        self.url = url.rstrip("/")
        self.greyscale = greyscale
        self.timeout = float(timeout)
        self._token = token or ""
        self._overrides = dict(params or {})
        self._info: dict[str, Any] | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, tuple[TokenCount, ...]] = OrderedDict()
        self._pinged: tuple[float, bool] = (-PING_KEEP_S, False)  # (when, answer) of the last health check

    def __repr__(self) -> str:
        return f"RemoteGenerator({self.name!r}, family={self.family!r}, url={self.url!r})"

    # ------------------------------------------------------------------------------------------ HTTP

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                self._client = httpx.Client(
                    base_url=self.url,
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
                )
            return self._client

    def _where(self) -> str:
        return f"model {self.name!r} at the generation service {self.url}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request; every failure is a BackendUnavailable (HTTP 400: ValueError)."""
        try:
            response = self._http().request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise BackendUnavailable(f"{self._where()} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"{self._where()} cannot be reached ({type(exc).__name__}: {exc}); is `p2p serve-models` running?"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        if response.status_code == 400 and message:
            raise ValueError(message)
        if response.status_code == 401:
            raise BackendUnavailable(f"{self._where()} refused the request: the model_token setting does not match "
                                     "the service's token")
        if response.status_code >= 400:
            raise BackendUnavailable(
                f"{self._where()} answered HTTP {response.status_code}: {message or response.text[:200]!r}"
            )
        if not isinstance(body, dict):
            raise BackendUnavailable(f"{self._where()} answered something that is not a JSON object "
                                     f"({response.headers.get('content-type', 'no content type')})")
        return body

    def info(self) -> dict[str, Any]:
        """The service's description of this model (family, modality, greyscale, defaults), fetched once and
        checked against this entry; ModelLoadError when they disagree."""
        if self._info is not None:
            return self._info
        body = self._call("GET", f"/v1/models/{quote(self.name, safe='')}")
        defaults = body.get("defaults")
        if not isinstance(defaults, dict):
            raise BackendUnavailable(f"{self._where()} did not describe the model's parameters")
        for key, mine in (("family", self.family), ("modality", self.modality)):
            if body.get(key) != mine:
                raise ModelLoadError(f"{self._where()}: the service's model is {key} {body.get(key)!r}, "
                                     f"this entry says {mine!r}")
        theirs = bool(defaults.get(GREYSCALE, False))
        mine = self.greyscale if self.greyscale is not None else self.modality == "radiology"
        if theirs != mine:
            raise ModelLoadError(f"{self._where()}: the service makes {'grey' if theirs else 'colour'} images, this "
                                 f"entry asks for {'grey' if mine else 'colour'} ones (the greyscale setting)")
        self._info = body
        return body

    def reachable(self) -> bool:
        """True when the service answers its health check within a couple of seconds (the answer is kept for
        a few seconds: the arena asks on every keystroke)."""
        now = time.monotonic()
        if now - self._pinged[0] < PING_KEEP_S:
            return self._pinged[1]
        try:
            ok = self._http().get("/healthz", timeout=PING_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            ok = False
        self._pinged = (time.monotonic(), ok)
        return ok

    # ------------------------------------------------------------------------------------------ params

    def _check(self, params: Mapping[str, Any], known: Mapping[str, Any], origin: str) -> dict[str, Any]:
        out = {}
        for key, value in params.items():
            rule = LORA_SCALE if key == "lora_scale" and "lora_scale" in known else self._family.param(key)
            if rule is None or key not in known:
                raise ValueError(
                    f"unknown parameter {key!r} for model {self.name!r} ({self.family}) in {origin}; "
                    f"known parameters: {', '.join(k for k in known if k != GREYSCALE)}"
                )
            out[key] = rule.check(value, self.name)
        return out

    def effective_params(self, **params: Any) -> dict[str, Any]:
        merged = dict(self.info()["defaults"])
        merged.update(self._check(self._overrides, merged, "config"))
        merged.update(self._check(params, merged, "the call"))
        return merged

    # ------------------------------------------------------------------------------------------ tokens

    def prompt_tokens(self, prompt: str) -> tuple[TokenCount, ...]:
        with self._lock:
            hit = self._tokens.get(prompt)
            if hit is not None:
                self._tokens.move_to_end(prompt)
                return hit
        body = self._call("POST", "/v1/tokens", json={"model": self.name, "prompt": prompt})
        try:
            counts = tuple(TokenCount(str(c["encoder"]), int(c["used"]), int(c["limit"])) for c in body["counts"])
        except (KeyError, TypeError, ValueError):
            counts = ()
        if not counts:
            raise BackendUnavailable(f"{self._where()} did not answer the token count")
        with self._lock:
            self._tokens[prompt] = counts
            while len(self._tokens) > _TOKEN_CACHE:
                self._tokens.popitem(last=False)
        return counts

    @property
    def text_encoder(self) -> str:
        return self.prompt_tokens("")[0].encoder

    @property
    def max_prompt_tokens(self) -> int:
        return self.prompt_tokens("")[0].limit

    def count_tokens(self, prompt: str) -> int:
        return self.prompt_tokens(prompt)[0].used

    # ------------------------------------------------------------------------------------------ generation

    def generate(self, prompt: str, seed: int, **params: Any) -> GenerationResult:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("The prompt is empty: type a description of the image.")
        prompt = " ".join(prompt.split())  # as check_prompt does; the service checks the token budget
        seed = check_seed(seed)
        effective = self.effective_params(**params)
        sent = {k: v for k, v in effective.items() if k != GREYSCALE}
        t0 = time.perf_counter()
        body = self._call("POST", "/v1/images/generations", json={
            "model": self.name, "prompt": prompt, "seed": seed, "params": sent, "response_format": "b64_json",
        })
        seconds = time.perf_counter() - t0
        image = self._image(body, prompt, seed, effective)
        return GenerationResult(image=image, model=self.name, family=self.family, prompt=prompt, seed=seed,
                                params=effective, seconds=float(body["data"][0].get("seconds") or seconds))

    def _image(self, body: Mapping[str, Any], prompt: str, seed: int, effective: Mapping[str, Any]) -> Image.Image:
        """The answer's image, or BackendUnavailable saying why the answer is not the image asked for."""
        def garbage(why: str) -> BackendUnavailable:
            return BackendUnavailable(f"{self._where()} answered with something that is not the image asked for: {why}")

        data = body.get("data")
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise garbage("no single image in 'data'")
        item = data[0]
        try:
            png = base64.b64decode(item.get("b64_json") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise garbage("'b64_json' is not base64") from None
        if not png.startswith(PNG_SIGNATURE):
            raise garbage(f"not a PNG ({len(png)} bytes)")
        try:
            with Image.open(io.BytesIO(png)) as im:
                im.load()
                image = im.convert("RGB") if im.mode != "RGB" else im.copy()
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise garbage(f"an unreadable PNG ({exc})") from None
        want = (effective.get("width"), effective.get("height"))
        if None not in want and image.size != want:
            raise garbage(f"{image.size[0]}×{image.size[1]} pixels instead of {want[0]}×{want[1]}")
        if item.get("seed") != seed or item.get("prompt") != prompt:
            raise garbage("it was made for another prompt or seed")
        if json.dumps(item.get("params"), sort_keys=True) != json.dumps(dict(effective), sort_keys=True):
            raise garbage(f"it was made with other settings ({item.get('params')!r} instead of {dict(effective)!r})")
        return image

    def load(self) -> None:
        """Check that the service serves this model as configured and load its tokenizer (on the service)."""
        self.info()
        self.prompt_tokens("")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._info = None
            self._tokens.clear()
        if client is not None:
            client.close()
