"""Exports of the reader-study (MRMC) data for the R and Java tools reviewers re-run (issue 22, item 5): MRMCaov's
long format, RJafroc's Excel layout (ROC) and iMRMC's input file. ``p2p export-r STUDY OUTDIR --tool …`` writes them.

The data are exactly those of the report's reader study (:func:`p2p_app.analysis.reader_study`): treatments =
generated models, readers = raters, cases = images, the real control images positive (truth 1) and shared by every
treatment, each model's own images negative (truth 0, so *nested in* that treatment), rating = each rater's first
``question`` score per image (no practice, catch trials, repeats or "can't judge"); raters with fewer than two real
images or two images of some model are left out (:func:`mrmc_frame`). Read back, every file gives the same
Obuchowski–Rockette numbers (:func:`p2p_app.mrmc.or_analysis`; ``tests/test_rtools.py``).

* **MRMCaov** (``mrmcaov.csv``: ``reader, test, case, truth, response``; ``mrmcaov.R`` runs
  ``mrmc(empirical_auc(truth, response), test, reader, case, data, cov = jackknife)``). The script's first lines
  state the design: "cases nested within test" when some case is read under only some treatments (the real-vs-
  generated study always is), else "fully crossed".
* **RJafroc** (``rjafroc.xlsx``, sheets ``Truth`` (``CaseID, LesionID, Weight, ReaderID, ModalityID, Paradigm``;
  ``Paradigm`` = ``ROC``, ``FCTRL``), ``NL`` (``ReaderID, ModalityID, CaseID, NL_Rating``: the negative cases) and
  ``LL`` (``ReaderID, ModalityID, CaseID, LesionID, LL_Rating``: the positive cases); ``rjafroc_cases.csv`` maps
  the integer ``CaseID`` to the image). ``Truth`` lists per case the readers and treatments that read it. RJafroc's
  factorial (FCTRL) analysis assumes every case is read in every treatment: for a nested-cases study use MRMCaov or
  iMRMC (``rjafroc_README.txt`` says so when it applies).
* **RJafroc, inferred ROC of artifact marks** (``rjafroc_hrauc.xlsx``, ``rjafroc_hrauc_cases.csv``; written with
  ``rjafroc`` when the study's marks carry confidences, ``mark_confidence``): the same layout, with each image's
  highest mark confidence as its rating (0 = not marked; :mod:`p2p_app.hrauc`) and the truth turned round — the
  generated images are the "diseased" cases (``LL``, one lesion each, ``LesionID`` 1), the real images the
  non-diseased ones (``NL``). That is RJafroc's convention for ROC data held in FROC form: the highest rating of a
  case goes to ``NL`` for a non-diseased and to ``LL`` for a diseased case, so RJafroc's ROC figure of merit on this
  file is the HrAuc of the marks. Free marks have no truth locations, so the marks themselves are not written as
  FROC lesion localisations.
* **iMRMC** (``imrmc.imrmc``: free-text header, ``NR:``, ``N0:``, ``N1:``, ``NM:``, then ``BEGIN DATA:``; one truth
  row per case ``-1,<case>,0,<truth>`` and one row per rating ``<reader>,<case>,<treatment>,<score>``; case ids are
  integers, as iMRMC and RJafroc's reader of it need). iMRMC analyses designs that are not fully crossed.

Reader and treatment labels go into these files as they are; a label holding a comma, a line break, or equal to the
truth rows' ``-1``/``0`` is refused (it would break the files' structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .designs import catch_trial_mask
from .mrmc import MRMC_COLUMNS, check_mrmc_frame
from .hrauc import HR_QUESTION, has_confidences, hr_ratings
from .tidy import REAL_SOURCE, REALISM, without_practice

TOOLS = ("mrmcaov", "rjafroc", "imrmc")


def mrmc_frame(df: pd.DataFrame, question: str = REALISM) -> pd.DataFrame:
    """The reader-study frame (``MRMC_COLUMNS``: reader = rater id, treatment = model, case = image id, truth,
    rating) built from the tidy frame ``df`` by the report's rules (module docstring). Raises ``ValueError`` when
    there is no reader study to export (no real controls, no scores, fewer than two raters with enough images)."""
    df = without_practice(df)
    mask = catch_trial_mask(df)
    if mask is not None:
        df = df[~mask]
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    sel = (df["question"].astype(str).to_numpy() == question) & np.isfinite(value)
    sel &= ~df["cant_judge"].fillna(False).to_numpy(dtype=bool) & ~df["is_repeat"].fillna(False).to_numpy(dtype=bool)
    s = df.loc[sel, ["rater_id", "image_id", "model", "source", "answered_at"]].assign(rating=value[sel])
    if s.empty:
        raise ValueError(f"no {question} scores to export")
    s = s.sort_values("answered_at", kind="stable").drop_duplicates(["rater_id", "image_id"])
    s["rater_id"] = s["rater_id"].astype(str)
    real = s["source"].astype(str).to_numpy() == REAL_SOURCE
    if not real.any():
        raise ValueError("no real control images: there is no reader study (real vs generated) to export")
    models = sorted(set(s.loc[~real, "model"].astype(str)))
    if not models:
        raise ValueError(f"no {question} scores for generated images")
    counts = s.assign(m=np.where(real, "\x00real", s["model"].astype(str))).groupby(["rater_id", "m"]).size()
    counts = counts.unstack(fill_value=0)
    needed = ["\x00real", *models]
    ok = counts.reindex(columns=needed, fill_value=0).ge(2).all(axis=1)
    readers = sorted(ok.index[ok])
    if len(readers) < 2:
        raise ValueError("fewer than two raters scored at least two real images and two images of every model")
    s = s[s["rater_id"].isin(readers)]
    real = s["source"].astype(str).to_numpy() == REAL_SOURCE
    parts = []
    for m in models:
        parts.append(pd.DataFrame({"reader": s.loc[real, "rater_id"], "treatment": m, "case": s.loc[real, "image_id"],
                                   "truth": 1, "rating": s.loc[real, "rating"]}))  # fmt: skip
        g = s[~real & (s["model"].astype(str) == m).to_numpy()]
        parts.append(pd.DataFrame({"reader": g["rater_id"], "treatment": m, "case": g["image_id"], "truth": 0,
                                   "rating": g["rating"]}))  # fmt: skip
    out = pd.concat(parts, ignore_index=True).loc[:, list(MRMC_COLUMNS)]
    out["case"] = out["case"].astype(str)
    return out


def nested_cases(frame: pd.DataFrame) -> bool:
    """True when some case is read under only some of the treatments (cases nested in treatment)."""
    per_case = frame.groupby("case")["treatment"].nunique()
    return bool((per_case < frame["treatment"].nunique()).any())


def _check_labels(frame: pd.DataFrame) -> None:
    for col in ("reader", "treatment"):
        for label in pd.unique(frame[col].astype(str)):
            if "," in label or "\n" in label or "\r" in label or label.strip() != label or label in ("-1", "0", ""):
                raise ValueError(f"{col} label {label!r} cannot go into the R tools' files (no commas, line breaks, "
                                 "surrounding spaces, empty, -1 or 0)")  # fmt: skip


def case_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer case ids: negatives 1..K0, then positives K0+1..K (columns ``case_id, case, truth``)."""
    cases = frame.drop_duplicates("case")[["case", "truth"]].sort_values(["truth", "case"], kind="stable")
    return pd.DataFrame({"case_id": np.arange(1, len(cases) + 1), "case": cases["case"].to_numpy(),
                         "truth": cases["truth"].to_numpy().astype(int)})  # fmt: skip


def write_mrmcaov(frame: pd.DataFrame, outdir: Path) -> list[Path]:
    """``mrmcaov.csv`` (reader, test, case, truth, response) and ``mrmcaov.R`` (module docstring)."""
    check_mrmc_frame(frame)
    outdir = Path(outdir)
    csv = outdir / "mrmcaov.csv"
    out = frame.rename(columns={"treatment": "test", "rating": "response"})
    out.loc[:, ["reader", "test", "case", "truth", "response"]].to_csv(csv, index=False)
    nested = nested_cases(frame)
    design = ("cases nested within test: each model's own generated images are read only under that model; the "
              "real images are shared by every test") if nested else "fully crossed (every reader, test and case)"
    script = outdir / "mrmcaov.R"
    script.write_text(
        "# Prompt to Polyp reader study for MRMCaov (https://github.com/brian-j-smith/MRMCaov)\n"
        f"# design: {design}\n"
        "# truth: 1 = real image (positive), 0 = generated; response: the rater's score (higher = more real)\n"
        "# cases are single images: the R tools' jackknife deletes one image at a time. When a prompt has several\n"
        "# seeds, its images share the prompt's difficulty and the app's report deletes whole prompts instead\n"
        "# (wider, correct intervals); the AUCs are the same, the standard errors here may be smaller.\n"
        "library(MRMCaov)\n"
        'd <- read.csv("mrmcaov.csv", colClasses = c(reader = "character", test = "character", case = "character"))\n'
        "fit <- mrmc(empirical_auc(truth, response), test, reader, case, data = d, cov = jackknife)\n"
        "print(summary(fit))\n",
        encoding="utf-8",
    )
    return [csv, script]


def write_rjafroc(frame: pd.DataFrame, outdir: Path, stem: str = "rjafroc") -> list[Path]:
    """``<stem>.xlsx`` (Truth, NL, LL; ROC), ``<stem>_cases.csv`` and, for nested cases, ``<stem>_README.txt``."""
    from openpyxl import Workbook

    check_mrmc_frame(frame)
    _check_labels(frame)
    outdir = Path(outdir)
    ids = case_numbers(frame)
    cid = dict(zip(ids["case"], ids["case_id"], strict=True))
    wb = Workbook()
    truth = wb.active
    truth.title = "Truth"
    truth.append(["CaseID", "LesionID", "Weight", "ReaderID", "ModalityID", "Paradigm"])
    readers = frame.groupby("case")["reader"].agg(lambda x: ", ".join(sorted(set(map(str, x)))))
    modalities = frame.groupby("case")["treatment"].agg(lambda x: ", ".join(sorted(set(map(str, x)))))
    paradigm = ["ROC", "FCTRL"]
    for i, (case_id, case, t) in enumerate(ids.itertuples(index=False)):
        truth.append([int(case_id), int(t), float(t), readers[case], modalities[case],
                      paradigm[i] if i < len(paradigm) else None])  # fmt: skip
    nl, ll = wb.create_sheet("NL"), wb.create_sheet("LL")
    nl.append(["ReaderID", "ModalityID", "CaseID", "NL_Rating"])
    ll.append(["ReaderID", "ModalityID", "CaseID", "LesionID", "LL_Rating"])
    for r, t, c, y, v in frame.loc[:, list(MRMC_COLUMNS)].itertuples(index=False):
        if int(y) == 1:
            ll.append([str(r), str(t), int(cid[c]), 1, float(v)])
        else:
            nl.append([str(r), str(t), int(cid[c]), float(v)])
    path = outdir / f"{stem}.xlsx"
    wb.save(path)
    cases = outdir / f"{stem}_cases.csv"
    ids.to_csv(cases, index=False)
    written = [path, cases]
    if nested_cases(frame):
        note = outdir / f"{stem}_README.txt"
        note.write_text(
            "Cases are nested within treatments here (each model's own generated images are read only under that "
            "model; the real images under every model). The Truth sheet lists, per case, the treatments and readers "
            "that read it, but RJafroc's factorial (FCTRL) analysis assumes every case is read in every treatment. "
            "Analyse this study with MRMCaov or iMRMC (p2p export-r --tool mrmcaov / imrmc); use this file for "
            "RJafroc's plots and per-treatment figures of merit.\n",
            encoding="utf-8",
        )
        written.append(note)
    return written


def write_imrmc(frame: pd.DataFrame, outdir: Path, title: str = "Prompt to Polyp reader study") -> list[Path]:
    """``imrmc.imrmc`` (module docstring)."""
    check_mrmc_frame(frame)
    _check_labels(frame)
    ids = case_numbers(frame)
    cid = dict(zip(ids["case"], ids["case_id"], strict=True))
    lines = [
        f"{title} (Prompt to Polyp export for iMRMC; truth 1 = real image, 0 = generated).",
        "Design: " + ("cases nested within modality." if nested_cases(frame) else "fully crossed."),
        "",
        f"NR: {frame['reader'].nunique()}",
        f"N0: {int((ids['truth'] == 0).sum())}",
        f"N1: {int((ids['truth'] == 1).sum())}",
        f"NM: {frame['treatment'].nunique()}",
        "",
        "BEGIN DATA:",
    ]
    lines += [f"-1,{int(i)},0,{int(t)}" for i, t in zip(ids["case_id"], ids["truth"], strict=True)]
    lines += [f"{r},{cid[c]},{t},{float(v)!r}" for r, t, c, v in
              frame.loc[:, ["reader", "treatment", "case", "rating"]].itertuples(index=False)]  # fmt: skip
    path = Path(outdir) / "imrmc.imrmc"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [path]


def hrauc_frame(df: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """The inferred ROC of the marks (:mod:`p2p_app.hrauc`) as an MRMC frame in RJafroc's orientation: truth 1 =
    generated image (diseased), 0 = real; rating = the image's highest mark confidence, 0 when unmarked; the same
    raters and images as :func:`mrmc_frame` would keep."""
    frame = mrmc_frame(hr_ratings(df, marks), HR_QUESTION)
    return frame.assign(truth=1 - frame["truth"].to_numpy(dtype=int))


def write_rjafroc_hrauc(frame: pd.DataFrame, outdir: Path) -> list[Path]:
    """``rjafroc_hrauc.xlsx`` / ``_cases.csv`` of :func:`hrauc_frame` (module docstring)."""
    return write_rjafroc(frame, outdir, stem="rjafroc_hrauc")


def export_r(
    df: pd.DataFrame, outdir: str | Path, tools=TOOLS, question: str = REALISM, marks: pd.DataFrame | None = None
) -> list[Path]:
    """Write the reader study of the tidy frame ``df`` for each of ``tools`` (any of ``TOOLS``) into ``outdir``
    (created if missing); returns the files written. Nothing is written when the data cannot be exported. With
    ``rjafroc`` and ``marks`` (the marks frame) that carry confidences, also the inferred ROC of the marks
    (:func:`write_rjafroc_hrauc`)."""
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        raise ValueError(f"unknown tool(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TOOLS)}")
    frame = mrmc_frame(df, question)
    if "rjafroc" in tools or "imrmc" in tools:
        _check_labels(frame)
    hr = hrauc_frame(df, marks) if "rjafroc" in tools and has_confidences(marks) else None
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir} exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    writers = {"mrmcaov": write_mrmcaov, "rjafroc": write_rjafroc, "imrmc": write_imrmc}
    written: list[Path] = []
    for tool in TOOLS:
        if tool in tools:
            written += writers[tool](frame, outdir)
    if hr is not None:
        written += write_rjafroc_hrauc(hr, outdir)
    return written
