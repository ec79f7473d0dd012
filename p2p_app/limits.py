"""Limits that keep one client from using up what everyone shares (pure core: no Gradio, no I/O).

* :class:`Backoff`: wrong guesses (admin password, resume codes, invite tokens) per *key* (an address, a network,
  a rater): the first ``free`` failures cost nothing, then each next attempt must wait ``base * 2**k`` seconds
  (at most ``cap``) after the last failure. A success clears the key. Nothing is ever locked for everyone: a key
  holds only its own attempts, so an outsider cannot keep the owner out from another address.
* :class:`Window`: at most ``limit`` events per key in any ``period`` seconds (arena generations per address and
  per session).
* :func:`client_address` / :func:`network_of`: who is asking, from the ASGI client and (behind one trusted proxy)
  the last ``X-Forwarded-For`` hop.

Every table is bounded (``max_keys``): the oldest keys are forgotten first, so a flood of fresh addresses
cannot grow memory without limit.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

Clock = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the key may try again (0 when allowed)

    def wait_text(self) -> str:
        """ "12 seconds" / "3 minutes": how long to wait, rounded up."""
        s = max(1, math.ceil(self.retry_after))
        return f"{s} second{'s' * (s != 1)}" if s < 120 else f"{math.ceil(s / 60)} minutes"


class Backoff:
    """Exponential backoff of failed attempts per key (see the module docstring)."""

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 900.0, forget_after: float = 3600.0,
                 max_keys: int = 100_000, clock: Clock = time.monotonic):  # fmt: skip
        self.free, self.base, self.cap, self.forget_after = free, base, cap, forget_after
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (failures, last failure)

    def delay(self, failures: int) -> float:
        """Seconds a key with ``failures`` failures waits after its last one before it may try again."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2 ** (failures - self.free))

    def check(self, *keys: str) -> Verdict:
        """May an attempt from all of ``keys`` be evaluated now? (The longest wait of the keys wins.)"""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                entry = self._failures.get(key)
                if entry is None:
                    continue
                failures, last = entry
                if now - last > self.forget_after:
                    del self._failures[key]
                    continue
                wait = max(wait, last + self.delay(failures) - now)
        return Verdict(wait <= 0, max(0.0, wait))

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                failures, _ = self._failures.pop(key, (0, now))
                self._failures[key] = (failures + 1, now)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, (0, 0.0))[0]


class Window:
    """At most ``limit`` events per key in any ``period`` seconds (sliding window). ``limit`` 0: no limit."""

    def __init__(self, limit: int, period: float = 3600.0, max_keys: int = 100_000, clock: Clock = time.monotonic):
        self.limit, self.period, self.max_keys, self.clock = limit, period, max_keys, clock
        self._lock = threading.Lock()
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def take(self, key: str) -> Verdict:
        """Count one event for ``key`` if it is within the limit; else say how long until it would be."""
        if self.limit <= 0:
            return Verdict(True)
        now = self.clock()
        with self._lock:
            events = self._events.pop(key, None) or deque()
            while events and now - events[0] >= self.period:
                events.popleft()
            allowed = len(events) < self.limit
            if allowed:
                events.append(now)
            self._events[key] = events
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return Verdict(True) if allowed else Verdict(False, events[0] + self.period - now)

    def give_back(self, key: str) -> None:
        """Undo the last :meth:`take` of ``key`` (the event did not happen after all, e.g. it was refused later)."""
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()


def client_address(client: tuple[str, int] | None, headers: Any, behind_proxy: bool) -> str:
    """The asking client's address: the TCP peer, or behind a trusted proxy (``behind_proxy``) the address that
    proxy put last in ``X-Forwarded-For`` (earlier hops are the client's to forge). "" when unknown."""
    peer = client[0] if client else ""
    if not behind_proxy:
        return peer
    items = headers.items() if hasattr(headers, "items") else headers  # a mapping, or ASGI (name, value) pairs
    forwarded = ""
    for k, v in items:
        k = k.decode("latin-1") if isinstance(k, bytes) else k
        if k.lower() == "x-forwarded-for":
            forwarded = v.decode("latin-1") if isinstance(v, bytes) else v
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    return hops[-1] if hops else peer


def network_of(address: str) -> str:
    """The address's network for a second, coarser key: /24 for IPv4, /64 for IPv6 (one home or one host's
    range); the address itself when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def in_networks(address: str, networks: Iterable[str]) -> bool:
    """True when ``address`` lies in one of ``networks`` (CIDR or single addresses; bad entries never match)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False
