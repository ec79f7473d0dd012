"""Devices for generation: one lock per device, and where a newly loaded model goes.

:class:`DevicePool` is shared by every generator of a process: it holds one lock per device (two pipelines never
run on one device at once), places each newly loaded model on the least-loaded GPU (:func:`choose_placement`), and
says when a model does not fit, so the backend falls back to diffusers' ``enable_model_cpu_offload()``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch

GiB = 1024**3

@dataclass(frozen=True)
class Placement:
    """Where a model lives: ``device`` runs it; ``offload`` keeps weights in CPU memory between uses."""

    device: str
    offload: bool = False


def _parse_device(device: str | None) -> str | None:
    """Normalise a device request: None/"auto" -> None, "cpu", "cuda", "cuda:N". Raises ValueError otherwise."""
    if device is None or device == "auto":
        return None
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if parsed.type == "cpu":
        return "cpu"
    return str(parsed)


def choose_placement(
    nbytes: int,
    free: Mapping[str, int],
    models: Mapping[str, int],
    headroom_bytes: int = 2 * GiB,
    headroom_fraction: float = 0.15,
) -> Placement:
    """Pick the device with the most free memory (ties: fewest models placed, then order given).

    The model is placed whole if its weights plus headroom fit in that device's free memory; otherwise it
    is placed there with CPU offload (only one component at a time needs to fit).
    """
    order = list(free)
    best = max(order, key=lambda d: (free[d], -models.get(d, 0), -order.index(d)))
    need = nbytes + headroom_bytes + int(headroom_fraction * nbytes)
    return Placement(best, offload=free[best] < need)


class DevicePool:
    """The devices generators may use, with one lock per device and memory-aware placement.

    ``devices=None`` means every visible CUDA device, or the CPU when there is none. Pass one pool to
    every generator of a process (the :class:`~generators.registry.Registry` does); generators on
    different devices run concurrently, generators on the same device take turns.

    A model is placed on the candidate GPU with the most free memory (ties: the one holding fewer
    models). If the model's weights plus headroom (``headroom_bytes + headroom_fraction * weights``)
    exceed that free memory, it is loaded with ``enable_model_cpu_offload()`` on that GPU instead.
    """

    def __init__(
        self,
        devices: Sequence[str] | None = None,
        *,
        headroom_bytes: int = 2 * GiB,
        headroom_fraction: float = 0.15,
    ) -> None:
        if devices is None:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = [f"cuda:{i}" for i in range(n)] or ["cpu"]
        keys: list[str] = []
        for d in devices:
            key = _parse_device(d)
            if key is None:
                raise ValueError("list concrete devices in a DevicePool ('cpu', 'cuda:0', ...), not 'auto'")
            if key.startswith("cuda"):
                if not torch.cuda.is_available():
                    raise ValueError(f"device {d!r} was requested but CUDA is not available on this machine")
                if key == "cuda":
                    key = f"cuda:{torch.cuda.current_device()}"
                if int(key.split(":")[1]) >= torch.cuda.device_count():
                    raise ValueError(f"device {d!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
            if key not in keys:
                keys.append(key)
        if not keys:
            raise ValueError("a DevicePool needs at least one device")
        self._devices = tuple(keys)
        self._locks = {k: threading.Lock() for k in (*keys, "cpu")}
        self._models = dict.fromkeys(self._locks, 0)
        self._placement_lock = threading.Lock()
        self.headroom_bytes = int(headroom_bytes)
        self.headroom_fraction = float(headroom_fraction)

    def __repr__(self) -> str:
        return f"DevicePool({list(self._devices)!r})"

    @property
    def devices(self) -> tuple[str, ...]:
        return self._devices

    def candidates(self, requested: str | None) -> tuple[str, ...]:
        """Devices a model asking for ``requested`` may be placed on; ValueError when there are none."""
        req = _parse_device(requested)
        if req is None:
            cuda = tuple(d for d in self._devices if d.startswith("cuda"))
            return cuda or ("cpu",)
        if req == "cpu":
            return ("cpu",)
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was requested but CUDA is not available on this machine")
        cuda = tuple(d for d in self._devices if d.startswith("cuda"))
        if req == "cuda":
            if not cuda:
                raise ValueError(f"device {requested!r} was requested but this pool has no CUDA device")
            return cuda
        if req not in cuda:
            raise ValueError(f"device {requested!r} is not in this pool ({', '.join(self._devices)})")
        return (req,)

    def lock(self, device: str) -> threading.Lock:
        """The lock a generator holds while its pipeline runs on ``device``."""
        return self._locks[device]

    def free_bytes(self, device: str) -> int:
        if device == "cpu":
            return 1 << 62
        return int(torch.cuda.mem_get_info(torch.device(device))[0])

    def _choose(self, nbytes: int, candidates: Sequence[str]) -> Placement:
        if tuple(candidates) == ("cpu",):
            return Placement("cpu")
        free = {d: self.free_bytes(d) for d in candidates}
        return choose_placement(
            nbytes, free, {d: self._models[d] for d in candidates}, self.headroom_bytes, self.headroom_fraction
        )

    @contextlib.contextmanager
    def placing(self, nbytes: int, candidates: Sequence[str]) -> Iterator[Placement]:
        """Choose a placement and hold it while the caller moves weights there.

        Placements are decided one at a time (so two loads never count the same free memory), and
        the chosen device's lock is held during the move (so weights never arrive mid-generation).
        """
        with self._placement_lock:
            placement = self._choose(nbytes, tuple(candidates))
            with self._locks[placement.device]:
                yield placement
            self._models[placement.device] += 1

    def release(self, placement: Placement) -> None:
        with self._placement_lock:
            self._models[placement.device] = max(0, self._models[placement.device] - 1)
