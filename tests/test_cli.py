"""The `p2p` command line on a real SQLite database: batch generation (resume, bad input, two processes),
study generate/verify/status, raters, export formats, report, and that every command and setting is documented
(docs/cli.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from p2p_app.cli import main
from p2p_app.study import study_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cli(tmp_path, model_dir, monkeypatch, demo_registry):
    monkeypatch.setenv("P2P_MODEL_DIR", str(model_dir))
    data = tmp_path / "data"

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, [*args, "--data-dir", str(data)], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    run.data = data
    return run


def prompts_csv(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.csv"
    path.write_text(
        "prompt_id,prompt,modality\n"
        "p1,a 5 mm sessile polyp,colonoscopy\n"
        "p2,chest X-ray with a right pleural effusion,radiology\n"
    )
    return path


def init_db(data: Path) -> None:
    """An empty database in ``data``, as the first `p2p serve` or `p2p study generate` leaves it."""
    from p2p_app.config import load_config
    from p2p_app.storage import Storage

    config = load_config(data_dir=str(data))
    Storage(config.resolved_database_url, config.image_dir).close()


def image_count(data: Path) -> int:
    import sqlite3

    with sqlite3.connect(data / "p2p.sqlite") as con:
        return con.execute("SELECT count(*) FROM images").fetchone()[0]


def test_generate_resumes_without_duplicating(cli, tmp_path):
    csv = prompts_csv(tmp_path)
    first = cli("generate", "--prompts", str(csv), "--seeds", "0", "--models", "colon-msdm-tiny,rad-msdm-tiny")
    assert "made 2, already there 0" in first.output
    more = cli("generate", "--prompts", str(csv), "--seeds", "0-1", "--models", "colon-msdm-tiny,rad-msdm-tiny")
    assert "made 2, already there 2" in more.output
    again = cli("generate", "--prompts", str(csv), "--seeds", "0-1", "--models", "colon-msdm-tiny,rad-msdm-tiny")
    assert "made 0, already there 4" in again.output
    assert image_count(cli.data) == 4
    assert len(list((cli.data / "images").glob("*.png"))) == 4


def test_generate_bad_input_is_refused_cleanly(cli, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,x\n")
    r = cli("generate", "--prompts", str(bad), ok=False)
    assert r.exit_code != 0 and "prompt" in r.output and "line 1" in r.output
    # the line named is the true line: a quoted prompt over two lines and a blank line come before the bad row
    shifted = tmp_path / "shifted.csv"
    shifted.write_text('prompt_id,prompt,modality\np1,"a polyp,\nsessile",colonoscopy\n\np2,a polyp,dermatology\n')
    r = cli("generate", "--prompts", str(shifted), ok=False)
    assert r.exit_code != 0 and f"{shifted}, line 5: unknown modality 'dermatology'" in r.output, r.output
    r = cli("generate", "--prompts", str(prompts_csv(tmp_path)), "--models", "nope", ok=False)
    assert r.exit_code != 0 and "unknown model" in r.output
    r = cli("generate", "--prompts", str(prompts_csv(tmp_path)), "--seeds", "x", ok=False)
    assert r.exit_code != 0
    assert not (cli.data / "p2p.sqlite").exists() or image_count(cli.data) == 0


def test_generate_failure_is_reported_and_the_batch_goes_on(cli, tmp_path, monkeypatch):
    from generators.diffusers_backend import DiffusersGenerator

    real = DiffusersGenerator.generate

    def flaky(self, prompt, seed, **params):
        if seed == 1:
            from generators.base import GenerationError

            raise GenerationError(f"model {self.name!r}: CUDA out of memory (seed {seed})")
        return real(self, prompt, seed, **params)

    monkeypatch.setattr(DiffusersGenerator, "generate", flaky)
    r = cli("generate", "--prompts", str(prompts_csv(tmp_path)), "--seeds", "0-2", "--models", "colon-msdm-tiny", ok=False)
    assert r.exit_code == 1
    assert "made 2, already there 0, failed 1" in r.output
    assert "out of memory" in r.output


def test_generate_splits_across_two_processes(tmp_path, model_dir):
    """The same command under a two-process launcher: each process makes its share, nothing twice."""
    csv = prompts_csv(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, P2P_MODEL_DIR=str(model_dir), TQDM_DISABLE="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), "-m", "p2p_app.cli", "generate", "--prompts", str(csv), "--seeds", "0-1",
        "--data-dir", str(tmp_path / "data"),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:  # the whole output: the failing rank's traceback sits in the middle of stderr
        pytest.fail(f"launcher exit {out.returncode}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}", pytrace=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("made")]
    assert sorted(lines) == ["made 6, already there 0, failed 0"] * 2
    assert image_count(tmp_path / "data") == 12


def test_study_commands_and_exports(cli, tmp_path):
    from test_reader_study import small_study

    study = small_study(tmp_path / "mini")
    r = cli("study", "generate", str(study))
    assert "frozen: design" in r.output and "made 6" in r.output
    assert "OK" in cli("study", "verify", str(study)).output
    status = cli("study", "status", str(study)).output  # every listed rater, before any is invited
    assert "no raters yet" not in status and all(f"{n} (not invited yet)" in status for n in ("ann", "ben", "cat"))
    r = cli("raters", "add", "ann", "--study", str(study))
    assert "?token=" in r.output
    token = r.output.strip().split("?token=")[1]
    r = cli("raters", "add", "zed", "--study", str(study), ok=False)
    assert r.exit_code != 0 and "not a rater" in r.output
    for same_person in ("ANN", "Ａｎｎ", " ann\u200b"):  # a listed name (its slot) is invited once, however typed
        r = cli("raters", "add", same_person, "--study", str(study), ok=False)
        assert r.exit_code != 0 and "already holds this rater place" in r.output, same_person
    assert cli("raters", "list", "--study", str(study)).output.count("slot=0") == 1
    old = token
    token = cli("raters", "reissue", "ann", "--study", str(study)).output.strip().split("?token=")[1]
    assert token != old
    status = cli("study", "status", str(study)).output
    assert "ann" in status and "ann (not invited yet)" not in status and "ben (not invited yet)" in status

    # rate everything as ann through the app, then export and report
    from conftest import make_app
    from p2p_app.service import UserError
    from p2p_app.study import load_study
    from test_reader_study import answer_all

    from generators import Registry
    from p2p_app.config import load_config

    app = make_app(cli.data, Registry(load_config().models, cache_dir=os.environ["P2P_MODEL_DIR"]))
    st = load_study(study)
    app.studies = {study_key(st): st}
    with pytest.raises(UserError, match="not valid"):
        app.study_sign_in(st, token=old)  # the reissued link voids the old one
    answer_all(app, st, app.study_sign_in(st, token=token), value=4)
    app.storage.close()

    long_csv, wide_csv, parquet = tmp_path / "long.csv", tmp_path / "wide.csv", tmp_path / "r.parquet"
    cli("export", str(long_csv), "--study", "mini")
    cli("export", str(wide_csv), "--format", "wide")
    cli("export", str(parquet))
    df = pd.read_csv(long_csv)
    assert len(df) > 0 and set(df["value"].dropna()) == {4.0} and set(df["study"]) == {"mini@v1"}
    assert len(pd.read_parquet(parquet)) == len(df)
    wide = pd.read_csv(wide_csv)
    assert wide["image_id"].is_unique
    report = tmp_path / "report.html"
    cli("report", str(study), "--out", str(report), "--bootstrap", "50")
    html = report.read_text()
    assert "<html" in html.lower() and "colon-msdm-tiny" in html
    import re

    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)  # self-contained: plotly.js is inline


def test_unknown_study_and_bad_config_are_clean_errors(cli, tmp_path):
    init_db(cli.data)
    r = cli("study", "verify", "no-such-study", ok=False)
    assert r.exit_code != 0 and "unknown study" in r.output
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[models]]\nname = "x"\nfamily = "dalle"\nsource = "tiny:msdm"\nmodality = "colonoscopy"\n')
    r = CliRunner().invoke(main, ["export", str(tmp_path / "o.csv"), "--config", str(cfg), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code != 0 and "dalle" in r.output and "Traceback" not in r.output


def toml_value(value) -> str:
    """A setting's default as the settings table of docs/cli.md writes it (TOML: true, "text", 512, [])."""
    import json

    return json.dumps(value, ensure_ascii=False) if not isinstance(value, bool) else str(value).lower()


def test_every_command_and_setting_is_documented():
    """docs/cli.md lists every click command and every setting, each setting with its true default and
    environment variable."""
    import click

    from p2p_app.config import SETTINGS

    page = (ROOT / "docs" / "cli.md").read_text()
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 4:
            rows[cells[0].strip("`")] = cells
    for s in SETTINGS:
        assert s.name in rows, f"setting {s.name} missing from docs/cli.md's settings table"
        _, default, env, *_ = rows[s.name]
        assert default == f"`{toml_value(s.default)}`", f"{s.name}: docs/cli.md says {default}, the code {s.default!r}"
        assert env == (f"`{s.env}`" if s.env else ""), f"{s.name}: docs/cli.md says env {env!r}, the code {s.env!r}"
        assert s.help

    def commands(group: click.Group, prefix: str = "p2p"):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from commands(cmd, f"{prefix} {name}")
            else:
                yield f"{prefix} {name}", cmd

    for full, cmd in commands(main):
        assert f"| `{full}" in page, f"command {full} missing from docs/cli.md's command table"
        assert cmd.help


def test_export_of_an_unknown_study_is_refused(cli, tmp_path):
    out = tmp_path / "typo.csv"
    init_db(cli.data)
    r = cli("export", str(out), "--study", "colonoscopy_pilto", ok=False)
    assert r.exit_code != 0 and "unknown study 'colonoscopy_pilto'" in r.output and "colonoscopy_pilot@v1" in r.output
    assert not out.exists()
    for name in ("live", "colonoscopy_pilot", "colonoscopy_pilot@v1"):
        assert "Wrote 0 answers" in cli("export", str(out), "--study", name).output


def test_export_to_xlsx_writes_a_workbook_and_a_name_of_another_format_is_refused(cli, tmp_path):
    import zipfile

    init_db(cli.data)
    out = tmp_path / "ratings.xlsx"
    assert "(long, xlsx)" in cli("export", str(out)).output
    assert zipfile.is_zipfile(out) and "xl/workbook.xml" in zipfile.ZipFile(out).namelist()  # not CSV
    for args, message in (([str(tmp_path / "r.xls")], "name it .csv, .xlsx or .parquet"),
                          ([str(tmp_path / "r.csv"), "--format", "parquet"], "name OUT .parquet"),
                          ([str(tmp_path / "m.parquet"), "--format", "marks"], "Parquet holds the long table only")):
        r = cli("export", *args, ok=False)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
        assert not Path(args[0]).exists()


def test_ctrl_c_keeps_what_was_made_and_the_next_run_resumes(cli, tmp_path, monkeypatch):
    from generators.diffusers_backend import DiffusersGenerator

    real, calls = DiffusersGenerator.generate, []

    def interrupted_on_third(self, prompt, seed, **params):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, prompt, seed, **params)

    args = ("generate", "--prompts", str(prompts_csv(tmp_path)), "--seeds", "0-1", "--models", "colon-msdm-tiny,rad-msdm-tiny")
    monkeypatch.setattr(DiffusersGenerator, "generate", interrupted_on_third)
    r = cli(*args, ok=False)
    assert r.exit_code == 130 and "run the same command again to resume" in r.output
    assert image_count(cli.data) == 2
    monkeypatch.setattr(DiffusersGenerator, "generate", real)
    assert "made 2, already there 2, failed 0" in cli(*args).output
    assert image_count(cli.data) == 4


def test_report_lists_a_study_model_without_ratings_as_not_computable(cli, tmp_path):
    """`p2p report` passes the study's models to the analysis: a model nobody has rated yet is a "not computable"
    row of the scores table, not left out (issue 11)."""
    import re

    from test_reader_study import small_study

    study = small_study(tmp_path / "mini")
    cli("study", "generate", str(study))
    report = tmp_path / "report.html"
    cli("report", str(study), "--out", str(report), "--bootstrap", "0")  # nobody has rated anything yet
    html = report.read_text()
    for model in ("colon-msdm-tiny", "colon-flux-tiny"):
        row = re.search(rf"<tr>\s*<td>{re.escape(model)}</td>(.*?)</tr>", html, re.S)
        assert row is not None, f"{model} is not listed"
        assert "not computable: no ratings for this model" in row.group(1)
