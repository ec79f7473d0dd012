"""Several app servers, one database: ``p2p serve`` processes behind Debian's nginx (the repository's
deploy/nginx.conf, sticky per browser) sharing one PostgreSQL, driven over the browser protocol.

    python benchmarks/bench_multiserver.py [--servers 3] [--raters 100] [--prompts 4]

Everything runs on 127.0.0.1 in temp folders: a throwaway PostgreSQL cluster, an open study prepared once (tiny
models) and copied into one database per run (``CREATE DATABASE … TEMPLATE``, so every run starts from the same
state), the app servers (the ``p2p serve`` CLI) and a private nginx. Each simulated rater is one browser: one
HTTP session with its own cookie jar (the proxy's route cookie) speaking Gradio's queue protocol
(tests/browser_client.py). It signs in with a name, answers every item of its sequence, and keeps its resume code.

Phases (each with its own raters):
  1. single   one app server, no proxy: the reference (submit p50/p95; every rater's assignment).
  2. multi    N app servers behind nginx: 0 lost, 0 duplicated, 0 "session not found", and every rater's
              assignment (items, order, panel order) identical to the single run's for the same slot.
  3. pg       the same deployment; PostgreSQL is restarted (stop, 2 s down, start) mid-load: submits during the
              outage get a message asking to try again; the rater retries; nothing acknowledged is lost.
  4. nonsticky  the same app servers behind nginx without its hash line (a misconfigured proxy): each rater
              is told clearly to sign in again (never Gradio's bare "session not found"), the log says "not sticky".
  5. kill     the same deployment; one app server gets kill -9 mid-load: its raters' pages lose their server, so
              they load the page again (same cookie jar: nginx moves them to a live server), sign in again with
              their resume code, must be shown their first unanswered item, and finish; the other servers' raters
              see nothing.
Exit status 1 when any check fails. The default test suite runs a small version (tests/test_multiserver.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from bench_load import ALIGNMENT, CODE, REALISM, Rater, make_site, pct  # noqa: E402
from deploy_harness import nginx_proxy, pg_cluster, start_app_server, stop  # noqa: E402

RETRY_MARKS = ("cannot be reached", "could not confirm", "could not be saved", "went wrong on the server")
MOVED_MARKS = ("does not hold your session", "not signed in", "different app server")
STUDY = ("load", 1)


@dataclass
class Browser(Rater):
    """One simulated rater with a browser's cookie jar; counts what happened to it."""

    cookies: object = None
    servers: list[str] = field(default_factory=list)  # the app server (host:port) that served each page load
    reloads: int = 0  # page loads after a broken connection or a "sign in again" message
    retries: int = 0  # submits pressed again after a "try again" message
    foreign: int = 0  # "session not found" / "different app server" answers
    resumed_right: int = 0
    resumed_wrong: list[str] = field(default_factory=list)
    done: bool = False
    moved_at: float = 0.0


def first_open(db_url: str, image_dir: Path, code: str) -> int | None:
    """The order index of the rater's first unanswered item (None: all answered), from the database."""
    from p2p_app.storage import Storage

    s = Storage(db_url, image_dir)
    try:
        rater = s.rater_by_token(code)
        trials = s.trials_for(rater.pk, s.study(*STUDY).pk) if rater else []
        return next((t.order_index for t in trials if t.submitted_at is None), None)
    finally:
        s.close()


def browse(url: str, r: Browser, stop_event: threading.Event, db_url: str, image_dir: Path, max_loads: int = 12) -> None:
    """Sign in (by name, or with the resume code after a reload), answer until every item is done."""
    import httpx

    from browser_client import BrowserSession

    r.cookies = r.cookies or httpx.Cookies()
    for load in range(max_loads):
        if stop_event.is_set():
            return
        page = None
        try:
            page = BrowserSession(url, query=f"token={r.code}" if r.code else "", cookies=r.cookies)
            r.servers.append(page.config_headers.get("x-p2p-upstream", url))
            form = _form(page)
            if not _sign_in(page, form, r, load, db_url, image_dir):
                return
            while True:
                if any("All items are done" in str(v) for v in page.values.values()):
                    r.done = True
                    return
                if stop_event.is_set():
                    return
                if not _submit(page, form, r):
                    return
        except _Reload:
            r.reloads += 1
            r.moved_at = r.moved_at or time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a broken connection: the person loads the page again
            message = f"{type(exc).__name__}: {exc}"
            if "Session not found" in message or "different app server" in message or "404" in message:
                r.foreign += 1
            r.reloads += 1
            r.moved_at = r.moved_at or time.monotonic()
            time.sleep(0.5)
        finally:
            if page is not None:
                r.cookies = page.http.cookies
                page.close()
    r.errors.append(f"gave up after {max_loads} page loads")


class _Form(NamedTuple):
    """The study screen's components on one loaded page."""

    start: int
    name: int
    submit_fn: int
    shown_field: int
    images: list[int]
    scales: list[int]


def _form(page) -> _Form:
    from browser_client import study

    ids = study(0)  # the site's one study
    start = page.by_id(ids.signin)
    submit = page.by_id(ids.submit)
    name = page.by_id(ids.name)
    submit_fn = page.event_for(submit)
    shown_field = page.by_id(ids.shown)
    images = page.images(ids)
    scales = page.answers(ids, REALISM) + page.answers(ids, ALIGNMENT)
    return _Form(start, name, submit_fn, shown_field, images, scales)


def _sign_in(page, form: _Form, r: Browser, load: int, db_url: str, image_dir: Path) -> bool:
    """Sign in by name; keep the resume code, or (on a page loaded again) check it shows the first unanswered
    item. False: give up (no resume code). Raises _Reload when the page asks to try again."""
    page.set(form.name, f"rater {r.index}")
    out = page.trigger(form.start)
    text = " ".join(str(v) for v in out.values())
    if "⚠️" in text and any(m in text for m in RETRY_MARKS):  # e.g. the database is restarting
        r.retries += 1
        time.sleep(0.5)
        raise _Reload(text)
    if not r.code:
        m = CODE.search(text)
        if not m:
            r.errors.append(f"no resume code at sign-in: {text[:160]}")
            return False
        r.code = m.group(1)
    elif load > 0:  # a page loaded again: it must show the first unanswered item
        expected = first_open(db_url, image_dir, r.code)
        shown = str(page.values.get(form.shown_field) or "")
        if _order_of(db_url, image_dir, shown) == expected:
            r.resumed_right += 1
        else:
            r.resumed_wrong.append(f"shown {shown!r}, first unanswered is order {expected}")
    return True


def _submit(page, form: _Form, r: Browser) -> bool:
    """Answer the item shown and submit it, counting what came back. False: give up (an unexpected answer).
    Raises _Reload when the page says the session is elsewhere."""
    for c in form.scales:
        page.set(c, 3)
    n_rows = sum(1 for c in form.images if page.values.get(c)) * 2
    trial_id = int(page.values[form.shown_field])
    dep = page.dependency(form.submit_fn)
    data = [page.values.get(i) for i in dep["inputs"]]
    t0 = time.perf_counter()
    out = page.call(form.submit_fn, data)
    ms = (time.perf_counter() - t0) * 1000
    text = " ".join(str(v) for v in out.values())
    if "⚠️" not in text and "⛔" not in text:
        r.submit_ms.append(ms)
        r.acked.append((trial_id, n_rows))
    elif "already answered" in text:  # the earlier try was stored after all: the next item is shown
        r.acked.append((trial_id, n_rows))
    elif any(m in text for m in RETRY_MARKS):
        r.retries += 1
        time.sleep(0.5)
        page.values.update(dict(zip(dep["inputs"], data)))  # the same answers, pressed again
    elif any(m in text for m in MOVED_MARKS):
        r.foreign += "different app server" in text
        raise _Reload(text)
    else:
        r.errors.append(text[text.find("⚠"):][:160] if "⚠" in text else text[:160])
        return False
    return True


class _Reload(Exception):
    pass


def _order_of(db_url: str, image_dir: Path, shown: str) -> int | None:
    from p2p_app.storage import Storage

    if not shown:
        return None
    s = Storage(db_url, image_dir)
    try:
        t = s.trial(int(shown))
        return None if t is None else t.order_index
    finally:
        s.close()


def assignments(db_url: str, image_dir: Path, codes: list[str]) -> dict[str, tuple[int, tuple]]:
    """resume code → (slot, ((order index, item key, panel order of image ids), …))."""
    from p2p_app.storage import Storage

    s = Storage(db_url, image_dir)
    try:
        study_pk = s.study(*STUDY).pk
        out = {}
        for code in codes:
            rater = s.rater_by_token(code)
            if rater is None:
                continue
            trials = s.trials_for(rater.pk, study_pk)
            out[code] = (rater.slot, tuple((t.order_index, t.item_key, tuple(t.shown_order)) for t in trials))
        return out
    finally:
        s.close()


def audit(db_url: str, image_dir: Path, raters: list[Browser]) -> dict:
    """Lost (acknowledged, not stored), duplicated (an image answered twice in one trial, or two trials for one
    rater position), rows stored for these raters, the rows their answered items should have (2 questions ×
    panels) and raters with every item answered. A submit the server stored but could not acknowledge (it was
    killed) is stored without being acknowledged: so stored ≥ acknowledged, never less."""
    from p2p_app.storage import Storage

    s = Storage(db_url, image_dir)
    try:
        study_pk = s.study(*STUDY).pk
        frame = s.ratings_frame()
        lost = dup = rows = complete = full = 0
        for r in raters:
            rater = s.rater_by_token(r.code) if r.code else None
            if rater is None:
                continue
            trials = s.trials_for(rater.pk, study_pk)
            complete += bool(trials) and all(t.submitted_at is not None for t in trials)
            dup += sum(n - 1 for n in Counter(t.order_index for t in trials).values())
            stored = {t.id for t in trials if t.submitted_at is not None}
            full += sum(2 * len(t.shown_order) for t in trials if t.submitted_at is not None)  # realism + alignment
            lost += sum(1 for t, _ in r.acked if t not in stored)
            mine = frame[frame["trial_id"].isin([t.id for t in trials])]
            rows += len(mine)
            keys = [c for c in ("trial_id", "image_id", "question") if c in mine.columns]
            dup += int(mine.duplicated(subset=keys).sum())
        return {"lost": lost, "duplicated": dup, "rows_stored": rows, "rows_of_answered_items": full,
                "complete": complete}
    finally:
        s.close()


def drive(url: str, raters: list[Browser], db_url: str, image_dir: Path, fault=None) -> float:
    """Run the raters at once; ``fault(raters)`` runs alongside (it returns when it has done its harm)."""
    stop_event = threading.Event()
    threads = [threading.Thread(target=browse, args=(url, r, stop_event, db_url, image_dir), daemon=True)
               for r in raters]  # fmt: skip
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if fault is not None:
        fault(raters)
    for t in threads:
        t.join(timeout=900)
    stop_event.set()
    return time.perf_counter() - t0


def wait_for_progress(raters: list[Browser], fraction: float, expected_submits: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(r.acked) for r in raters) < fraction * expected_submits and time.monotonic() < deadline:
        time.sleep(0.05)


def summary(name: str, raters: list[Browser], seconds: float, db_url: str, image_dir: Path) -> dict:
    a = audit(db_url, image_dir, raters)
    sub = [x for r in raters for x in r.submit_ms]
    fig = {
        "phase": name, "raters": len(raters), "seconds": round(seconds, 1),
        "acknowledged": sum(len(r.acked) for r in raters), "rows_expected": sum(n for r in raters for _, n in r.acked),
        **a, "errors": sum(len(r.errors) for r in raters), "session_not_found": sum(r.foreign for r in raters),
        "reloads": sum(r.reloads for r in raters), "retries": sum(r.retries for r in raters),
        "resumed_right": sum(r.resumed_right for r in raters), "resumed_wrong": sum(len(r.resumed_wrong) for r in raters),
        "submit_p50_ms": round(pct(sub, 0.5), 1), "submit_p95_ms": round(pct(sub, 0.95), 1),
        "servers": dict(Counter(r.servers[0] for r in raters if r.servers)),
    }  # fmt: skip
    print(f"{name}: {fig['raters']} raters, {fig['seconds']} s; acknowledged submits {fig['acknowledged']}, rows "
          f"stored {fig['rows_stored']} (expected ≥ {fig['rows_expected']}); lost {fig['lost']}, duplicated "
          f"{fig['duplicated']}, complete {fig['complete']}/{fig['raters']}; errors {fig['errors']}, session not "
          f"found {fig['session_not_found']}, page reloads {fig['reloads']}, retried submits {fig['retries']}, "
          f"resumed right {fig['resumed_right']} wrong {fig['resumed_wrong']}; submit p50 {fig['submit_p50_ms']} ms "
          f"p95 {fig['submit_p95_ms']} ms; first server per rater {fig['servers']}")  # fmt: skip
    for e in sorted({e for r in raters for e in r.errors + r.resumed_wrong})[:5]:
        print("   problem:", e)
    return fig


def run(servers: int = 3, n_raters: int = 100, prompts: int = 4, slots: int = 4, work: Path | None = None,
        phases: tuple[str, ...] = ("single", "multi", "pg", "nonsticky", "kill"), models: Path | None = None,
        echo=print) -> dict:  # fmt: skip
    """All phases; returns {phase: figures} plus "checks": {name: passed}."""
    own = work is None
    work = work or Path(tempfile.mkdtemp(prefix="p2p-multi-"))
    figs: dict = {}
    procs = []
    try:
        with pg_cluster() as pg:
            t0 = time.perf_counter()
            template = pg.create_database("p2p_template")
            site = make_site(work, prompts, template, models=models, slots=slots)
            items = n_raters * prompts * 2 * 2 // slots  # overlap 2 of `slots`: each rater answers 2/slots of the items
            echo(f"prepared the study in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores (shared with "
                 f"whatever else runs here); {servers} app servers, {n_raters} raters per phase, ~{items // n_raters} "
                 "items each")  # fmt: skip
            image_dir = site.data / "images"
            refs: dict = {}
            if "single" in phases:
                figs["single"], refs = single_phase(pg, site, work, image_dir, n_raters, procs)
            db = pg.create_database("p2p_multi", template="p2p_template")
            t1 = time.perf_counter()
            apps = [start_app_server(site.config, site.data, db, site.models, work / f"app{i}.log")
                    for i in range(servers)]  # fmt: skip
            procs += [p for p, _ in apps]
            echo(f"started {servers} app servers in {time.perf_counter() - t1:.0f} s")
            upstreams = [u.removeprefix("http://") for _, u in apps]
            with nginx_proxy(upstreams) as proxy:
                stage = Stage(pg, db, image_dir, proxy, apps, items, echo)
                offset = 1000
                if "multi" in phases:
                    figs["multi"] = multi_phase(stage, [Browser(offset + i) for i in range(n_raters)], refs, figs)
                    offset += 1000
                if "pg" in phases:
                    figs["pg"] = pg_phase(stage, [Browser(offset + i) for i in range(n_raters)])
                    offset += 1000
                if "nonsticky" in phases:
                    figs["nonsticky"] = nonsticky(upstreams, [work / f"app{i}.log" for i in range(servers)],
                                                  min(n_raters, 10), echo)  # fmt: skip
                if "kill" in phases:
                    figs["kill"] = kill_phase(stage, [Browser(offset + i) for i in range(n_raters)])
    finally:
        for p in procs:
            stop(p)
        if own:
            shutil.rmtree(work, ignore_errors=True)
    figs["checks"] = checks(figs)
    return figs


@dataclass
class Stage:
    """What the phases behind nginx share: the PostgreSQL cluster, the database, the proxy's URL, the app servers
    ((process, URL) each), the number of submits a phase expects, and where progress is reported."""

    pg: object
    db: str
    image_dir: Path
    proxy: str
    apps: list
    items: int
    echo: object


def single_phase(pg, site, work: Path, image_dir: Path, n_raters: int, procs: list) -> tuple[dict, dict]:
    """One app server, no proxy: the reference. Returns its figures and {slot: assignment} of its raters."""
    db = pg.create_database("p2p_single", template="p2p_template")
    proc, url = start_app_server(site.config, site.data, db, site.models, work / "single.log")
    procs.append(proc)
    raters = [Browser(i) for i in range(n_raters)]
    secs = drive(url, raters, db, image_dir)
    fig = summary("single (1 app server, no proxy)", raters, secs, db, image_dir)
    single = assignments(db, image_dir, [r.code for r in raters])
    refs = {slot: seq for slot, seq in single.values()}
    fig["raters_per_slot"] = dict(sorted(Counter(slot for slot, _ in single.values()).items()))
    stop(proc)
    return fig, refs


def multi_phase(stage: Stage, raters: list[Browser], refs: dict, figs: dict) -> dict:
    """The app servers behind nginx; each rater's assignment compared with the single run's (``refs``)."""
    servers, db, image_dir = len(stage.apps), stage.db, stage.image_dir
    secs = drive(stage.proxy, raters, db, image_dir)
    fig = summary(f"multi ({servers} app servers behind nginx)", raters, secs, db, image_dir)
    got = assignments(db, image_dir, [r.code for r in raters])
    fig["raters_per_slot"] = dict(sorted(Counter(slot for slot, _ in got.values()).items()))
    fig["assignment_mismatches"] = sum(1 for slot, seq in got.values() if slot in refs and refs[slot] != seq)
    fig["slots_compared"] = len({slot for slot, _ in got.values()} & set(refs))
    if "single" in figs:
        for q in ("p50", "p95"):
            fig[f"ratio_{q}"] = round(fig[f"submit_{q}_ms"] / figs["single"][f"submit_{q}_ms"], 2)
    stage.echo(f"  assignments identical to the single run: {len(got) - fig['assignment_mismatches']}/"
               f"{len(got)} raters ({fig['slots_compared']} slots); raters per slot {fig['raters_per_slot']} "
               f"(single run: {figs.get('single', {}).get('raters_per_slot')}); submit time ÷ single run: p50 "
               f"{fig.get('ratio_p50')}×, p95 {fig.get('ratio_p95')}×")  # fmt: skip
    return fig


def pg_phase(stage: Stage, raters: list[Browser]) -> dict:
    """PostgreSQL restarted (stop, 2 s down, start) once 30% of the submits are in."""
    outage = {}

    def restart_postgres(rs: list[Browser]) -> None:
        wait_for_progress(rs, 0.3, stage.items)
        outage["start"] = time.perf_counter()
        stage.pg.stop("fast")
        time.sleep(2.0)
        stage.pg.start()
        outage["seconds"] = round(time.perf_counter() - outage["start"], 1)

    secs = drive(stage.proxy, raters, stage.db, stage.image_dir, fault=restart_postgres)
    fig = summary("pg (PostgreSQL restarted mid-load)", raters, secs, stage.db, stage.image_dir)
    fig["outage_seconds"] = outage.get("seconds")
    stage.echo(f"  PostgreSQL was down {fig['outage_seconds']} s; app servers still up: "
               f"{sum(p.poll() is None for p, _ in stage.apps)}/{len(stage.apps)}")  # fmt: skip
    return fig


def kill_phase(stage: Stage, raters: list[Browser]) -> dict:
    """kill -9 of the first app server once 30% of the submits are in: its raters must reload and resume, the
    other servers' raters must notice nothing."""
    servers = len(stage.apps)
    victim_proc, victim_url = stage.apps[0]
    victim = victim_url.removeprefix("http://")
    killed = {}

    def kill_one(rs: list[Browser]) -> None:
        wait_for_progress(rs, 0.3, stage.items)
        victim_proc.kill()  # SIGKILL: no shutdown, nothing flushed
        victim_proc.wait()
        killed["at"] = time.monotonic()

    secs = drive(stage.proxy, raters, stage.db, stage.image_dir, fault=kill_one)
    fig = summary(f"kill (kill -9 one of {servers} app servers mid-load)", raters, secs, stage.db, stage.image_dir)
    on_victim = [r for r in raters if r.servers and r.servers[0] == victim]
    others = [r for r in raters if r not in on_victim]
    fig["raters_on_killed_server"] = len(on_victim)
    fig["killed_raters_reloaded"] = sum(1 for r in on_victim if r.reloads)
    fig["killed_raters_complete"] = sum(1 for r in on_victim if r.done)
    fig["killed_raters_resumed_right"] = sum(1 for r in on_victim if r.resumed_right)
    fig["other_raters_disturbed"] = sum(1 for r in others if r.reloads or r.errors)
    moved = [r.moved_at - killed["at"] for r in on_victim if r.moved_at and "at" in killed]
    stage.echo(f"  raters on the killed server {len(on_victim)}: reloaded {fig['killed_raters_reloaded']}, "
               f"resumed at their first unanswered item {fig['killed_raters_resumed_right']}, finished "
               f"{fig['killed_raters_complete']}; raters of the other servers disturbed "
               f"{fig['other_raters_disturbed']}/{len(others)}")  # fmt: skip
    if moved:
        fig["noticed_kill_within_s"] = round(max(moved), 1)
    return fig


def nonsticky(upstreams: list[str], logs: list[Path], n: int, echo=print) -> dict:
    """The misconfigured proxy: the same app servers behind nginx without its ``hash`` line (round robin). Each
    rater signs in and submits once; what the page said is classified. A clear message is SESSION_ELSEWHERE (the
    guard) or SESSION_NOT_HERE (the service); anything else (Gradio's bare "session not found", an exception, a
    missing result) is unclear."""
    from browser_client import BrowserSession, study

    from p2p_app.service import SESSION_NOT_HERE
    from p2p_app.ui.guard import SESSION_ELSEWHERE

    before = [log.read_text(errors="replace").count("not sticky") for log in logs]
    outcomes = Counter()
    with nginx_proxy(upstreams, sticky=False) as proxy:
        for i in range(n):
            page = BrowserSession(proxy)
            try:
                start = page.by_id(study(0).signin)
                submit = page.by_id(study(0).submit)
                name = page.by_id(study(0).name)
                page.set(name, f"unlucky rater {i}")
                page.trigger(start)
                out = page.trigger(submit)
                text = " ".join(str(v) for v in out.values())
                if SESSION_NOT_HERE[:40] in text:
                    outcomes["clear"] += 1
                else:  # both events happened to reach one server: it worked, or it said something else
                    outcomes["worked" if "⚠" not in text and "⛔" not in text else f"unclear: {text[:80]}"] += 1
            except RuntimeError as exc:
                outcomes["clear" if SESSION_ELSEWHERE[:40] in str(exc) else f"unclear: {str(exc)[:80]}"] += 1
            except Exception as exc:  # noqa: BLE001
                outcomes[f"unclear: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            finally:
                page.close()
    time.sleep(0.5)
    logged = sum(log.read_text(errors="replace").count("not sticky") for log in logs) - sum(before)
    fig = {"raters": n, "clear_message": outcomes.pop("clear", 0), "worked": outcomes.pop("worked", 0),
           "other": dict(outcomes), "log_says_not_sticky": logged}
    echo(f"nonsticky (nginx without its hash line): {n} raters, told clearly to sign in again {fig['clear_message']}, "
         f"other outcomes {fig['other'] or 'none'}; warnings 'not sticky' in the app servers' logs {logged}")
    return fig


def checks(figs: dict) -> dict[str, bool]:
    out = {}
    for name, fig in figs.items():
        if not isinstance(fig, dict) or "lost" not in fig:
            continue
        out[f"{name}: 0 lost"] = fig["lost"] == 0
        out[f"{name}: 0 duplicated"] = fig["duplicated"] == 0
        out[f"{name}: 0 errors"] = fig["errors"] == 0
        if name != "kill":  # there, the killed server's raters are told their session is gone: the right message
            out[f"{name}: 0 session not found"] = fig["session_not_found"] == 0
        out[f"{name}: every rater finished"] = fig["complete"] == fig["raters"]
        out[f"{name}: resumed at the first unanswered item"] = fig["resumed_wrong"] == 0
        out[f"{name}: every answered item has exactly its rows"] = fig["rows_stored"] == fig["rows_of_answered_items"]
        out[f"{name}: rows stored ≥ rows acknowledged"] = fig["rows_stored"] >= fig["rows_expected"]
    if "multi" in figs and "single" in figs:
        m = figs["multi"]
        out["multi: assignments identical to the single run"] = (
            m["assignment_mismatches"] == 0 and m["raters_per_slot"] == figs["single"]["raters_per_slot"]
            and m["slots_compared"] == len(m["raters_per_slot"]))
        out["multi: raters spread over every app server"] = len(figs["multi"]["servers"]) > 1
    if "multi" in figs:
        out["multi: no page reloads"] = figs["multi"]["reloads"] == 0
    if "nonsticky" in figs:
        ns = figs["nonsticky"]
        out["nonsticky: every rater told clearly (or lucky), none crashed"] = (
            ns["clear_message"] > 0 and ns["clear_message"] + ns["worked"] == ns["raters"])
        out["nonsticky: the log says the proxy is not sticky"] = ns["log_says_not_sticky"] > 0
    if "kill" in figs:
        k = figs["kill"]
        out["kill: the killed server's raters reloaded and resumed"] = (
            k["raters_on_killed_server"] > 0 and k["killed_raters_resumed_right"] == k["killed_raters_reloaded"] > 0)
        out["kill: the other servers' raters undisturbed"] = k["other_raters_disturbed"] == 0  # (a 'session gone' answer makes a reload)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--raters", type=int, default=100, help="raters per phase")
    parser.add_argument("--prompts", type=int, default=4, help="prompts in the open study (× 2 models = items)")
    parser.add_argument("--slots", type=int, default=4, help="rater slots (each item goes to 2 of them)")
    parser.add_argument("--work", default=None, help="work folder (default: a temp folder, removed after)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    figs = run(args.servers, args.raters, args.prompts, args.slots, Path(args.work) if args.work else None)
    failed = [name for name, ok in figs["checks"].items() if not ok]
    print(f"checks: {len(figs['checks']) - len(failed)}/{len(figs['checks'])} passed; total "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    for name in failed:
        print("  FAILED:", name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
