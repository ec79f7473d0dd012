"""Crash test: ``kill -9`` the server in the middle of a load, restart it on the same data, and check that every
acknowledged submit is stored and that each rater resumes at the right item (the first one not stored).

    python benchmarks/crash_test.py [--raters 20] [--kills 2] [--database-url postgresql+psycopg://...]

Each round: N raters (browser protocol, one HTTP session each, as in bench_load.py) answer items of an open
study; after ``--after`` seconds the server process gets SIGKILL. The round's acknowledged submits are then
compared with the database, and after the restart every rater signs in again with the personal resume code
the first sign-in showed; the item the page shows must be that rater's first unanswered one. Exit status 1
on any lost submit or wrong resume point. Runs in well under 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from bench_load import Rater, make_site, study_rater  # noqa: E402


def crash_round(proc, url: str, raters: list[Rater], items: int, after: float) -> None:
    """Run the raters on the running server (resuming with their codes), kill -9 it ``after`` seconds after the
    round's first acknowledged submit (at most 60 s of waiting for it): a kill before any submit is acknowledged
    would check nothing."""
    stop = threading.Event()
    threads = []
    for r in raters:
        r.acked.clear()
        r.errors.clear()
        threads.append(threading.Thread(target=study_rater, args=(url, r, items, stop, r.code), daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not any(r.acked for r in raters) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(after)
    proc.kill()  # SIGKILL: no shutdown, no flush
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=60)


def check(site, raters: list[Rater]):
    """(acknowledged, acknowledged and stored, raters resuming right, problems, (proc, url) of the restarted
    server) after a kill."""
    from browser_client import BrowserSession, study

    from p2p_app.storage import Storage

    problems = []
    s = Storage(site.database_url or f"sqlite:///{site.data / 'p2p.sqlite'}", site.data / "images")
    try:
        acked = [(r, t) for r in raters for t, _ in r.acked]
        ok = 0
        for r, t in acked:
            trial = s.trial(t)
            if trial is not None and trial.submitted_at is not None and s.trial_answers(t, trial.rater_pk):
                ok += 1
            else:
                problems.append(f"rater {r.index}: acknowledged trial {t} is not stored")
        expected = {}
        for r in raters:
            if not r.code:
                continue
            rater = s.rater_by_token(r.code)
            if rater is None:
                problems.append(f"rater {r.index}: unknown resume code")
                continue
            study_pk = s.study("load", 1).pk
            trials = s.trials_for(rater.pk, study_pk)
            first_open = next((t.order_index for t in trials if t.submitted_at is None), len(
                [t for t in trials if t.submitted_at is not None]))  # fmt: skip
            expected[r.index] = (rater.pk, first_open, all(t.submitted_at is not None for t in trials))
    finally:
        s.close()
    proc, url = site.start()
    resumed = 0
    for r in raters:
        if r.index not in expected:
            continue
        page = BrowserSession(url, query=f"token={r.code}")
        try:
            page.trigger(page.by_id(study(0).signin))
            shown = page.values.get(page.by_id(study(0).shown))  # the study's trial field, not the arena's
        finally:
            page.close()
        s = Storage(site.database_url or f"sqlite:///{site.data / 'p2p.sqlite'}", site.data / "images")
        try:
            trial = s.trial(int(shown)) if shown else None
        finally:
            s.close()
        pk, first_open, all_done = expected[r.index]
        if trial is not None and trial.rater_pk == pk and trial.order_index == first_open:
            resumed += 1
        elif trial is None and not shown and all_done:
            resumed += 1  # every item answered: the page says so
        else:
            problems.append(f"rater {r.index}: resumed at {trial and trial.order_index}, expected {first_open}")
    return len(acked), ok, resumed, problems, (proc, url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--after", type=float, default=3.0,
                        help="seconds of load after the round's first acknowledged submit before each kill -9")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="p2p-crash-"))
    t0 = time.perf_counter()
    bad = False
    try:
        site = make_site(work, args.prompts, args.database_url)
        print(f"prepared in {time.perf_counter() - t0:.0f} s")
        raters = [Rater(i) for i in range(args.raters)]
        proc, url = site.start()
        for k in range(args.kills):
            crash_round(proc, url, raters, items=1000, after=args.after)
            n, ok, resumed, problems, (proc, url) = check(site, raters)
            n_codes = sum(1 for r in raters if r.code)
            print(f"kill -9 #{k + 1}: acknowledged submits {n}, stored {ok}, lost {n - ok}; "
                  f"raters resuming at the right item {resumed}/{n_codes}")  # fmt: skip
            for p in problems[:5]:
                print("  problem:", p)
            if n == 0:
                print("  problem: no submit was acknowledged before the kill: this round checked nothing")
            bad |= bool(problems) or n == 0
        proc.kill()
        proc.wait()
        print(f"total {time.perf_counter() - t0:.0f} s")
        return 1 if bad else 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
