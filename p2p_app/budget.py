"""What the live arena may use, so that no visitor can stop a study by filling the disk (issue 23).

Before a Generate writes anything, :meth:`ArenaBudget.admit` checks, in this order:

1. the per-session and per-address limits (settings ``arena_per_session_per_hour``, ``arena_per_address_per_hour``;
   on when ``arena_limits`` says so: by default whenever no access code is set);
2. the free-space reserve (``disk_reserve_mb``): the arena stops while the data folder's disk has less than this
   free, long before a study submit (a few hundred bytes) could fail;
3. the disk budget of arena images (``arena_disk_budget_mb``).

When 2 or 3 fail, unrated arena images older than :data:`CLEANUP_AFTER_S` are deleted first (with the abandoned
screens that showed them; ``Storage.delete_unrated_arena_images``) and the check is made again. Study images and
rated arena images are never deleted. A refusal is a :class:`~p2p_app.service.UserError`-style message raised by
the caller; nothing is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from .blinding import presentation_png_size
from .config import AppConfig
from .limits import Verdict, Window, network_of
from .storage import Storage

CLEANUP_AFTER_S = 15 * 60  # an unrated arena screen older than this is abandoned
MB = 1 << 20

LIMIT_SESSION = ("You have run {limit} Generates in the last hour, the most one session may; try again in {wait}. "
                 "Ratings of the images on screen are still taken.")
LIMIT_ADDRESS = ("{limit} Generates came from your network in the last hour, the most the arena allows; try again in "
                 "{wait}.")
SIGN_INS = "{limit} new sign-ins came from your network in the last hour, the most the arena allows; try again in {wait}."
DISK_LOW = ("The server is short of disk space, so the live arena makes no new images for now (the studies go on). "
            "Try again later.")
BUDGET_FULL = ("The live arena has used its disk space for images, so it makes no new images for now (the studies go "
               "on). Try again later.")


class ArenaRefused(Exception):
    """A Generate the arena will not run now; the message says why and for how long."""


@dataclass
class ArenaBudget:
    config: AppConfig
    storage: Storage
    free_bytes: Callable[[Path], int] = field(default=lambda p: shutil.disk_usage(p).free)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    per_session: Window = field(init=False)
    per_address: Window = field(init=False)

    def __post_init__(self) -> None:
        self.per_session = Window(self.config.arena_per_session_per_hour)
        self.per_address = Window(self.config.arena_per_address_per_hour)
        # new arena raters (rows in the database) per address: twice its Generates, so a session refused by its
        # own limit can sign in again and use the rest of the address's Generates
        self.sign_ins = Window(2 * self.config.arena_per_address_per_hour)

    def admit_sign_in(self, address: str) -> None:
        """Raise :class:`ArenaRefused` when ``address`` has made too many new arena raters in the last hour."""
        if self.config.arena_limited and address:
            key = network_of(address) if ":" in address else address
            self._take(self.sign_ins, key, SIGN_INS, self.sign_ins.limit)

    def image_bytes(self) -> int:
        return presentation_png_size(self.config.presentation_size)

    def admit(self, session_key: str, address: str, n_images: int) -> None:
        """Raise :class:`ArenaRefused` unless a Generate of ``n_images`` new images may run now."""
        limited = self.config.arena_limited and bool(address)  # web clients; the CLI and tests of the core pass none
        if limited:
            self._take(self.per_session, session_key, LIMIT_SESSION, self.config.arena_per_session_per_hour)
            address = network_of(address) if ":" in address else address  # IPv6: one host's /64 is one address
            try:
                self._take(self.per_address, address, LIMIT_ADDRESS, self.config.arena_per_address_per_hour)
            except ArenaRefused:
                self.per_session.give_back(session_key)
                raise
        try:
            self.check_disk(n_images * self.image_bytes())
        except ArenaRefused:
            if limited:  # a refusal for the disk is not the visitor's Generate
                self.per_session.give_back(session_key)
                self.per_address.give_back(address)
            raise

    @staticmethod
    def _take(window: Window, key: str, text: str, limit: int) -> None:
        verdict: Verdict = window.take(key)
        if not verdict.allowed:
            raise ArenaRefused(text.format(limit=limit, wait=verdict.wait_text()))

    def check_disk(self, needed: int) -> None:
        for attempt in range(2):
            problem = self._disk_problem(needed)
            if not problem:
                return
            if attempt == 0 and not self.clean(needed):
                break
        raise ArenaRefused(problem)

    def _disk_problem(self, needed: int) -> str:
        if self.free_bytes(self.config.image_dir) - needed < self.config.disk_reserve_mb * MB:
            return DISK_LOW
        if self.storage.count_arena_images() * self.image_bytes() + needed > self.config.arena_disk_budget_mb * MB:
            return BUDGET_FULL
        return ""

    def clean(self, needed: int) -> int:
        """Delete unrated arena images older than :data:`CLEANUP_AFTER_S`, enough to make room for ``needed`` bytes
        within the budget and above the reserve (at least one screen's worth). Returns how many were deleted."""
        size = self.image_bytes()
        over_budget = self.storage.count_arena_images() * size + needed - self.config.arena_disk_budget_mb * MB
        short = self.config.disk_reserve_mb * MB + needed - self.free_bytes(self.config.image_dir)
        count = max(1, -(-max(over_budget, short, needed) // size))
        cutoff = self.now() - timedelta(seconds=CLEANUP_AFTER_S)
        return self.storage.delete_unrated_arena_images(cutoff, count)
