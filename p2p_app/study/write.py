"""Writing a study folder (``study.toml`` and its CSV files) and TOML values."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .load import CONTROL_COLUMNS, PROMPT_COLUMNS


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (what the app writes: study files, a pack's presenter config)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(column, "") for column in header])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_study(
    directory: Path | str,
    settings: Mapping[str, Any],
    prompts: Sequence[Mapping[str, str]],
    controls: Sequence[Mapping[str, str]] = (),
    questions: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``study.toml``, the prompt CSV and (when ``controls``) ``controls/captions.csv``.

    ``settings`` are the top-level TOML keys, written as given and NOT checked (so tests can write
    broken studies); ``prompts`` defaults to ``"prompts.csv"`` and ``controls`` to ``"controls"``.
    Image files are the caller's. Returns the path of ``study.toml``; :func:`load_study` checks it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = dict(settings)
    settings.setdefault("prompts", "prompts.csv")
    if controls:
        settings.setdefault("controls", "controls")
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    for question in questions:
        lines += ["", "[[questions]]"] + [f"{k} = {toml_value(v)}" for k, v in question.items()]
    toml_path = directory / "study.toml"
    toml_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompt_columns = ["prompt_id", "prompt"] + [c for c in PROMPT_COLUMNS[1] if any(c in p for p in prompts)]
    _write_csv(directory / settings["prompts"], prompt_columns, prompts)
    if controls:
        folder = directory / settings["controls"]
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "captions.csv", CONTROL_COLUMNS[0], controls)
    return toml_path

