"""The small interface every model backend implements.

A generator receives everything it needs through its constructor and has one entry point,
``generate(prompt, seed, **params)``, with the same argument names for every family. It returns a
:class:`GenerationResult`: the image plus exactly what made it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from PIL import Image

MODALITIES = ("colonoscopy", "radiology")
MAX_SEED = 2**63 - 1  # seeds fit a signed 64-bit database column
DEFAULT_TIMEOUT = 300.0  # seconds a generation service may take for one image (a real model, queued behind a batch)


def is_url(source: object) -> bool:
    """True for a generation service's address (``http://…`` or ``https://…``) as a model's source."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


class GenerationError(RuntimeError):
    """A generation failed for a reason the user should read (names the model and settings)."""


class BackendUnavailable(GenerationError):
    """A generation service (``source = "http://…"``) cannot be reached, timed out or answered with something that
    is not the image asked for; the message names the model, the address and what went wrong."""


class ModelLoadError(ValueError):
    """A configured model cannot be loaded (missing or corrupt folder, bad LoRA, ...); names the entry."""


@dataclass(frozen=True)
class GenerationResult:
    image: Image.Image
    model: str
    family: str
    prompt: str
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return modality


def check_seed(seed: int) -> int:
    """Return ``seed`` as an int, or raise ValueError (seeds are integers in 0 .. 2**63 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r}")
    return int(seed)


def cache_key(spec_name: str, prompt: str, seed: int, effective_params: Mapping[str, Any]) -> str:
    """Stable key of one generation: sha256 of canonical JSON of (model name, prompt, seed, params).

    ``prompt`` should be the normalised prompt (``GenerationResult.prompt`` / ``check_prompt``'s result) and
    ``effective_params`` what :meth:`Generator.effective_params` returned, so a changed default or override
    changes the key. The model is identified by name only: give a model a new name when its weights change.
    Keys are equal across processes and machines.
    """
    payload = {"model": spec_name, "prompt": prompt, "seed": int(seed), "params": dict(effective_params)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenCount:
    """A prompt's length in one text encoder's tokens and what that encoder reads (special tokens excluded)."""

    encoder: str  # for people: "CLIP text encoder"
    used: int
    limit: int

    @property
    def room(self) -> int:
        """Tokens left (negative: that many too many)."""
        return self.limit - self.used


def strictest(counts) -> TokenCount:
    """The count with the least room left (ties: the smaller limit): the encoder that cuts the prompt first."""
    return min(counts, key=lambda c: (c.room, c.limit))


def too_many_tokens(words: int, tokens: int, limit: int, encoder: str = "text encoder") -> str:
    """The refusal of a prompt of ``words`` words and ``tokens`` tokens over an encoder's ``limit``: how long it
    is, the limit, and about how much to cut (tokens, and words at the prompt's own tokens-per-word rate)."""
    over = tokens - limit
    cut = max(1, math.ceil(over * max(words, 1) / max(tokens, 1)))
    return (
        f"The prompt is too long for the {encoder}: {tokens} tokens, at most {limit}. "
        f"Cut about {over} token{'s' if over != 1 else ''} (≈ {cut} word{'s' if cut != 1 else ''}); "
        "the model would silently ignore the rest."
    )


class Generator(abc.ABC):
    """A named text-to-image model for one modality."""

    name: str
    family: str
    modality: str

    @property
    @abc.abstractmethod
    def max_prompt_tokens(self) -> int:
        """How many tokens the text encoder reads (special tokens excluded)."""

    @abc.abstractmethod
    def count_tokens(self, prompt: str) -> int:
        """Number of tokens ``prompt`` takes in this model's (first) tokenizer, special tokens excluded."""

    @property
    def text_encoder(self) -> str:
        """What reads the prompt, for people ("CLIP text encoder"): the encoder ``max_prompt_tokens`` is of."""
        return "text encoder"

    def prompt_tokens(self, prompt: str) -> tuple[TokenCount, ...]:
        """``prompt``'s length for each text encoder that reads it (default: the first one only)."""
        return (TokenCount(self.text_encoder, self.count_tokens(prompt), self.max_prompt_tokens),)

    @abc.abstractmethod
    def effective_params(self, **params: Any) -> dict[str, Any]:
        """Family defaults merged with config overrides and ``params``: what ``generate`` will use.

        Raises ValueError on an unknown parameter name or a bad value. The result is JSON-serialisable
        and is what the generation cache is keyed by.
        """

    @abc.abstractmethod
    def generate(self, prompt: str, seed: int, **params: Any) -> GenerationResult:
        """Make one image. Same model + prompt + seed + params gives the same image."""

    def check_prompt(self, prompt: str) -> str:
        """Return the stripped prompt, or raise ValueError with a message a clinician can act on."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("The prompt is empty: type a description of the image.")
        prompt = " ".join(prompt.split())
        count = strictest(self.prompt_tokens(prompt))
        if count.room < 0:
            raise ValueError(too_many_tokens(len(prompt.split()), count.used, count.limit, count.encoder))
        return prompt

    def load(self) -> None:  # pragma: no cover - default is lazy
        """Load weights now (otherwise the first ``generate`` does)."""

    def close(self) -> None:  # pragma: no cover
        """Free weights and device memory."""
