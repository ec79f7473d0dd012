"""Issue 10 guards that need no server: admin sign-in checks and throttling (issue 23: per address), submits whose outcome is unknown, the cached
assignment plan, text hygiene, Markdown escaping."""

from __future__ import annotations

import asyncio

import pytest

from conftest import make_app
from p2p_app.study import study_key


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_admin_gate_checks_user_and_password_at_once(tmp_path, demo_registry):
    from p2p_app.ui.admin import AdminGate

    app = make_app(tmp_path / "d", demo_registry, admin_password="right-one")
    gate = AdminGate(app)
    run = asyncio.run
    assert run(gate.check("admin", "right-one"))
    assert not run(gate.check("root", "right-one"))  # the user name is checked too
    for _ in range(50):  # wrong passwords lock nothing here: the throttle is per address (test_availability.py)
        assert not run(gate.check("admin", "guess"))
    assert run(gate.check("admin", "right-one"))


def test_login_throttle_backs_off_per_address_never_globally():
    from p2p_app.limits import Backoff
    from p2p_app.ui.guard import LoginThrottle

    clock = FakeClock()
    throttle = LoginThrottle(Backoff(free=5, base=1.0, cap=900.0, clock=clock), trusted=("192.0.2.0/24",))
    waits = []
    for _ in range(12):
        verdict = throttle.check("198.51.100.7")
        if not verdict.allowed:
            waits.append(verdict.retry_after)
            clock.now += verdict.retry_after
        throttle.failed("198.51.100.7")
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]  # five free tries, then doubling
    assert throttle.check("203.0.113.9").allowed  # another address: no wait at all
    assert throttle.check("198.51.100.8").allowed  # a neighbour keeps its free tries (the network key fills slowly)
    for _ in range(100):
        throttle.failed("192.0.2.10")  # the owner's trusted network is never slowed down
    assert throttle.check("192.0.2.10").allowed


def test_no_admin_password_opens_nothing(tmp_path, demo_registry):
    from p2p_app.ui.admin import AdminGate

    app = make_app(tmp_path / "d", demo_registry, admin_password="")
    assert not asyncio.run(AdminGate(app).check("admin", ""))


PROMPT = "colonoscopy image with a single sessile polyp of 5-10 mm, no instruments"


def test_a_submit_that_fails_after_storing_is_reported_as_saved(app, monkeypatch):
    """The write committed but the call failed afterwards (a lost connection): the rater is told "saved"."""
    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)
    real = app.storage.record_ratings

    def committed_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise ConnectionError("connection lost after COMMIT")

    monkeypatch.setattr(app.storage, "record_ratings", committed_then_lost)
    body = {p.position: {"realism": 3, "alignment": 3} for p in trial.panels}
    result = app.submit(rater, trial.trial_id, body, shown=str(trial.trial_id))
    assert result.status == "stored" and "saved" in result.message.lower()


def test_a_submit_that_failed_before_storing_says_nothing_was_written(app, monkeypatch):
    from p2p_app.service import UserError

    rater = app.sign_in("Dr A")
    trial = app.live_generate(rater, "colonoscopy", PROMPT)

    def lost(*args, **kwargs):
        raise ConnectionError("connection lost before COMMIT")

    monkeypatch.setattr(app.storage, "record_ratings", lost)
    body = {p.position: {"realism": 3, "alignment": 3} for p in trial.panels}
    with pytest.raises(UserError, match="nothing was written"):
        app.submit(rater, trial.trial_id, body, shown=str(trial.trial_id))
    real_trial, reads = app.storage.trial, []

    def first_read_only(trial_id):  # the submit's own lookup works; the check after the error cannot read
        reads.append(trial_id)
        if len(reads) > 1:
            raise ConnectionError("database gone")
        return real_trial(trial_id)

    monkeypatch.setattr(app.storage, "trial", first_read_only)  # ask to press Submit again
    with pytest.raises(UserError, match="could not confirm.*never stored twice"):
        app.submit(rater, trial.trial_id, body, shown=str(trial.trial_id))


def test_the_assignment_plan_is_computed_once_per_slot(tmp_path, demo_registry, monkeypatch):
    from test_reader_study import answer_all, invite, small_study

    from p2p_app import assignment, reader
    from p2p_app.service import rater_plan
    from p2p_app.study import load_study

    app = make_app(tmp_path / "data", demo_registry)
    st = load_study(small_study(tmp_path / "mini"), known_models=[m.name for m in app.config.models])
    app.studies = {study_key(st): st}
    reader.prepare_study(app, st)
    rater_plan.cache_clear()
    calls = []
    real = assignment.rater_sequence
    monkeypatch.setattr(assignment, "rater_sequence", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    n = answer_all(app, st, invite(app, st, "ann"))
    assert n > 2 and calls == [0]  # one computation for the slot, however many submits


def test_markdown_escaping_of_names():
    from p2p_app.ui.common import md_escape

    out = md_escape("<img src=x onerror=alert(1)> [x](javascript:alert(1)) **b**")
    assert "<img" not in out and "&lt;img" in out and "](" not in out.replace("\\](", "") and "**" not in out
