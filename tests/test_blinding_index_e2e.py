"""The blinding index end to end through the page (issue 22 item 1): a study file with ``blinding_index = true`` →
prepare → a rater signs in through an invite link, rates, answers the model question, goes on → export
(``--format guesses``) → report ("Blinding index"). The page is driven the way its browser drives it
(tests/browser_client.py, parts found by their declared ids). Blinding: the question's options are built once from
the study and never sent again with a screen, so they are identical on every screen."""

from __future__ import annotations

import pandas as pd
import pytest
from browser_client import BrowserSession, study
from click.testing import CliRunner
from conftest import running_study

from p2p_app import reader
from p2p_app.analysis.blinding_index import DONT_KNOW
from p2p_app.ui.guesses import guess_choices

IDS = study(0)


@pytest.fixture()
def server(tmp_path, demo_registry):
    with running_study(tmp_path, demo_registry, blinding_index=True) as served:
        yield served


def test_rate_then_guess_then_next_export_and_report(server, tmp_path):
    app, st, token, url = server
    page = BrowserSession(url, query=f"token={token}")
    guess = page.by_id(IDS.guess(0))
    box, guess_submit, submit = page.by_id(IDS.guess_box), page.by_id(IDS.guess_submit), page.by_id(IDS.submit)
    options = [list(c) for c in page.components[guess]["props"]["choices"]]
    assert options == [list(c) for c in guess_choices(st)]  # the study's list, in the page from the start
    assert page.visible[box] is False
    realism, alignment = page.answers(IDS, "realism"), page.answers(IDS, "alignment")
    page.trigger(page.by_id(IDS.signin))
    # the question cannot be answered before a screen's ratings are stored: nothing is written
    page.set(guess, st.models[0])
    out = page.trigger(guess_submit)
    assert any("⛔" in str(v) for v in out.values()), {k: v for k, v in out.items() if v is not None}
    assert app.storage.guesses_frame().empty
    values = [v for _, v in guess_choices(st)]
    total = len(reader.assignment.rater_sequence(st, 0))
    for step in range(total):
        page.set(realism[0], 1 + step % 5)
        page.set(alignment[0], 3)
        out = page.trigger(submit)
        assert page.visible[box] is True and page.visible[submit] is False, f"screen {step}: no question"
        assert "choices" not in out[guess], "the options are sent with a screen"  # identical on every screen
        assert page.values[guess] is None  # nothing carried over from the last screen
        n_guesses = len(app.storage.guesses_frame())
        page.set(guess, values[step % len(values)])
        page.trigger(guess_submit)
        assert len(app.storage.guesses_frame()) == n_guesses + 1
        if step < total - 1:
            assert page.visible[box] is False and page.visible[submit] is True  # the next item
    assert any("All items are done" in str(v) for v in page.values.values())
    page.close()

    from p2p_app.cli import main

    data = str(tmp_path / "data")
    out_csv = tmp_path / "guesses.csv"
    res = CliRunner().invoke(main, ["export", str(out_csv), "--study", "mini", "--format", "guesses", "--data-dir", data])
    assert res.exit_code == 0, res.output
    exported = pd.read_csv(out_csv, keep_default_na=False)
    assert len(exported) == total and set(exported["guess"]) <= {DONT_KNOW, *st.guess_options()}
    assert set(exported["truth"]) <= set(st.guess_options())
    html_out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", str(tmp_path / "mini"), "--out", str(html_out), "--bootstrap", "50", "--data-dir", data])
    assert res.exit_code == 0, res.output
    html = html_out.read_text()
    assert "<h2>Blinding index</h2>" in html
    for table in ("blinding_james", "blinding_bang", "blinding_raters"):
        assert f"<h3>{table}</h3>" in html
