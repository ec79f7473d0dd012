"""Serving presentation images to raters: opaque per-presentation tokens, checked bytes, no cache copies.

* **Tokens.** Every time a screen is shown, each of its images gets a fresh random token (128 bits, drawn from
  the OS; not derived from the image, its id or its bytes) bound to that rater and trial. The page's image URL
  names only the token, so a planned repeat or a catch screen that reuses an image gets new URLs, and two
  raters never share one. The table is kept in memory (a restart asks raters to reload, which issues new
  tokens), bounded in size, and a rater's tokens of older screens are dropped (:data:`SCREENS_KEPT`).
* **Bytes.** The file is served from where it is stored (no second copy in Gradio's cache) with its PNG data
  split into the same number of IDAT chunks at random, token-seeded places (:func:`png_variant`): the same
  length and pixels, other bytes, so comparing downloaded bytes or their hashes does not find a repeat. A rater
  (or script) who decodes and compares the pixels still can: that is what a repeat is.
* **Integrity.** Before an image is first shown its bytes are checked against the sha256 recorded when it was
  stored (:class:`Integrity`); the result is cached per file state (size, mtime, inode), so each image is read
  and hashed once until the file changes. A file that does not match is never served: the screen says so and
  the image is listed in the serve log and on the admin page.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import struct
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCREENS_KEPT = 3  # a rater's tokens of this many latest screens stay valid (the screen on show and the ones before)
MAX_TOKENS = 200_000


@dataclass(frozen=True)
class Presented:
    token: str
    image_id: str
    path: str
    sha256: str
    rater_pk: int
    trial_id: int


class Presentations:
    """Token → what it shows (see the module docstring). Thread-safe; bounded."""

    def __init__(self, max_tokens: int = MAX_TOKENS, screens_kept: int = SCREENS_KEPT) -> None:
        self.max_tokens = max_tokens
        self.screens_kept = screens_kept
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, Presented] = OrderedDict()
        self._screens: dict[int, list[tuple[int, list[str]]]] = {}  # rater -> [(trial, tokens)], oldest first

    def issue(self, rater_pk: int, trial_id: int, images: list[tuple[str, str, str]]) -> list[str]:
        """New tokens for one screen: ``images`` are (image id, file path, sha256) in panel order."""
        tokens = [secrets.token_urlsafe(16) for _ in images]
        with self._lock:
            for token, (image_id, path, sha) in zip(tokens, images):
                self._tokens[token] = Presented(token, image_id, path, sha, rater_pk, trial_id)
            screens = self._screens.setdefault(rater_pk, [])
            screens.append((trial_id, tokens))
            while len(screens) > self.screens_kept:
                _, old = screens.pop(0)
                for t in old:
                    self._tokens.pop(t, None)
            while len(self._tokens) > self.max_tokens:
                self._tokens.popitem(last=False)
        return tokens

    def get(self, token: str) -> Presented | None:
        with self._lock:
            return self._tokens.get(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


@dataclass(frozen=True)
class BrokenImage:
    image_id: str
    path: str
    problem: str
    seen_at: float


class Integrity:
    """sha256 check of an image file, once per file state; remembers the images that failed."""

    def __init__(self, max_cached: int = 500_000) -> None:
        self.max_cached = max_cached
        self._lock = threading.Lock()
        self._checked: OrderedDict[tuple, bool] = OrderedDict()
        self._broken: dict[str, BrokenImage] = {}

    def check(self, image_id: str, path: str, sha256: str) -> str:
        """"" when the file at ``path`` has the recorded ``sha256``; else what is wrong with it."""
        try:
            st = Path(path).stat()
        except OSError:
            return self._fail(image_id, path, "the file is missing")
        key = (image_id, path, st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            known = self._checked.get(key)
        if known:
            return ""
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            return self._fail(image_id, path, f"the file cannot be read ({exc.strerror or exc})")
        if digest != sha256:
            return self._fail(image_id, path, f"its bytes ({st.st_size} B) do not match the recorded sha256")
        with self._lock:
            self._checked[key] = True
            while len(self._checked) > self.max_cached:
                self._checked.popitem(last=False)
            self._broken.pop(image_id, None)
        return ""

    def _fail(self, image_id: str, path: str, problem: str) -> str:
        with self._lock:
            first = image_id not in self._broken
            self._broken[image_id] = BrokenImage(image_id, path, problem, time.time())
        if first:
            log.error("image %s (%s) is not served: %s; run `p2p study verify`", image_id, path, problem)
        return problem

    def broken(self) -> list[BrokenImage]:
        """The images refused so far (this process), oldest first."""
        with self._lock:
            return sorted(self._broken.values(), key=lambda b: b.seen_at)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_variant(data: bytes, seed: str) -> bytes:
    """``data`` (a PNG) with its image data re-split into the same number of IDAT chunks at places drawn from
    ``seed``: same length, same pixels, other bytes (chunk lengths and CRCs move). Not a PNG, or one with a single
    IDAT chunk: returned unchanged."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    chunks: list[tuple[bytes, bytes]] = []
    i = len(PNG_SIGNATURE)
    while i + 8 <= len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        chunks.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    idat = [k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT"]
    if len(idat) < 2 or idat != list(range(idat[0], idat[-1] + 1)):
        return data
    stream = b"".join(chunks[k][1] for k in idat)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), len(idat) - 1))
    parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    out = [PNG_SIGNATURE]
    for kind, body in chunks[:idat[0]] + [(b"IDAT", p) for p in parts] + chunks[idat[-1] + 1:]:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)
