"""The documentation states facts that the code keeps true: links resolve, the export column tables are the code's,
and the reader-study walkthrough runs exactly as written.

``python tests/test_docs.py --write`` regenerates the column tables of docs/exports.md after a column change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "studies" / "README.md", *DOCS.glob("*.md")])
EXPORTS = DOCS / "exports.md"
WALKTHROUGH = DOCS / "reader-study.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
BLOCK = re.compile(r"<!-- columns:(\w+) [^>]*-->\n(.*?)<!-- /columns:\1 -->", re.S)


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a line starting with ``` opens or closes one)."""
    out, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = prose(page)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", body, re.M)}


def relative_links(page: Path):
    for target in LINK.findall(prose(page)):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked
            yield target


def test_every_relative_link_points_to_an_existing_file_and_heading():
    assert len(PAGES) >= 15, PAGES
    broken = []
    checked = 0
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            checked += 1
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.name})")
    assert checked > 50
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if f"](docs/{p.name}" not in readme]
    assert not missing, f"pages the README does not link: {missing}"


def column_blocks() -> dict[str, str]:
    return {m.group(1): m.group(2) for m in BLOCK.finditer(EXPORTS.read_text())}


def test_export_column_tables_are_the_codes():
    from p2p_app.export import COLUMN_TABLES, columns_markdown

    blocks = column_blocks()
    assert set(blocks) == set(COLUMN_TABLES), f"docs/exports.md has tables {sorted(blocks)}"
    for table, text in blocks.items():
        assert text == columns_markdown(table), (
            f"docs/exports.md's {table} columns differ from p2p_app.export.COLUMN_TABLES: run "
            "`python tests/test_docs.py --write`")
    # the table lists every column the export writes, in file order
    from p2p_app.tidy import MARK_COLUMNS, TIDY_COLUMNS

    def names(table: str) -> tuple[str, ...]:
        return tuple(re.findall(r"^\| `([^`]+)` \|", blocks[table], re.M))

    assert names("long") == TIDY_COLUMNS
    assert names("marks") == MARK_COLUMNS


def test_export_columns_are_described_once():
    """The column table lives in docs/exports.md only: no other page repeats a column's row."""
    for page in PAGES:
        if page == EXPORTS:
            continue
        rows = re.findall(r"^\| `?(?:active_seconds|rater_group|catch_kind|order_index)`? \|", page.read_text(), re.M)
        assert not rows, f"{page.relative_to(ROOT)} repeats the export column table: {rows}"


def walkthrough_script() -> str:
    blocks = re.findall(r"^```bash\n(.*?)^```", WALKTHROUGH.read_text(), re.M | re.S)
    return "\n".join(blocks)


def test_the_walkthrough_covers_every_step_in_order():
    script = walkthrough_script()
    steps = ["p2p plan", "my_study/study.toml", "p2p study generate", "p2p study verify", "p2p raters add",
             "p2p serve", "p2p study status", "p2p export ", "p2p export-r", "p2p report"]
    at = [script.find(s) for s in steps]
    assert -1 not in at and at == sorted(at), dict(zip(steps, at))


RATERS = textwrap.dedent(
    """
    # Stands in for `p2p serve` and the raters: every invited rater signs in with their link and answers everything.
    import random, re, sys
    from p2p_app.startup import create

    config = sys.argv[sys.argv.index("--config") + 1]
    app = create(config)
    (study,) = app.studies.values()
    rng = random.Random(0)
    tokens = re.findall(r"token=([A-Za-z0-9_-]+)", open("invites.txt").read())
    assert len(tokens) == len(study.raters), tokens
    for token in tokens:
        session = app.study_sign_in(study, token=token)
        while (shown := app.next_trial(study, session)) is not None:
            answers = {p.position: {"realism": rng.randint(1, 5), "alignment": rng.randint(1, 5)} for p in shown.panels}
            assert app.submit_trial(study, session, shown.trial_id, answers).status == "stored"
    app.storage.close()
    print(f"raters answered: {len(tokens)}")
    """
)


def test_the_reader_study_walkthrough_runs_as_written(tmp_path, model_dir, demo_registry):
    """Every command of docs/reader-study.md, as written, in a fresh folder (the repository's studies/ linked in),
    with the tiny models; `p2p serve` is replaced by simulated raters answering through their invite links."""
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    (tmp_path / "raters.py").write_text(RATERS)
    prelude = (
        "set -euo pipefail\n"
        'p2p() { if [ "$1" = serve ]; then shift; python raters.py "$@"; else python -m p2p_app.cli "$@"; fi; }\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "P2P_MODEL_DIR": str(model_dir)}
    for key in ("P2P_DATA_DIR", "P2P_DATABASE_URL", "P2P_CONFIG", "P2P_ADMIN_PASSWORD"):
        env.pop(key, None)
    run = subprocess.run(["bash", "-c", prelude + walkthrough_script()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    assert "my_study@v1: made 6, reused 0, real imported 3, failed 0" in out
    assert out.count("my_study@v1: OK, design and images unchanged") == 2
    assert "raters answered: 3" in out
    assert re.search(r"Wrote \d+ answers \(long, csv\) to my_study.csv", out)
    import pandas as pd

    long = pd.read_csv(tmp_path / "my_study.csv")
    assert long["rater_id"].nunique() == 3 and set(long["model"]) == {"colon-msdm-tiny", "colon-flux-tiny", "real"}
    for name in ("plan.html", "my_study.xlsx", "r_files/mrmcaov.csv", "r_files/imrmc.imrmc", "my_study_report.html"):
        assert (tmp_path / name).stat().st_size > 0, name


def write_column_tables() -> None:
    from p2p_app.export import columns_markdown

    text = EXPORTS.read_text()
    new = BLOCK.sub(lambda m: m.group(0).replace(m.group(2), columns_markdown(m.group(1))), text)
    EXPORTS.write_text(new)
    print("docs/exports.md: column tables", "rewritten" if new != text else "already up to date")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(ROOT))
    write_column_tables()
