"""Loading a study: ``study.toml`` (checked key by key, errors naming the line) and its CSV files (the strict
CSV reader every CSV the app reads goes through)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from PIL import Image

from generators.base import MODALITIES

from ..text import name_key
from .model import (
    BUILTIN_QUESTIONS,
    CATCH_KINDS,
    CATCH_REAL_KIND,
    DEFAULT_NOTICE_WORDS,
    DEFAULT_QUESTIONS,
    DESIGNS,
    DISCLOSED_ORDERS,
    MAX_CATCH_RATE,
    MAX_REPEAT_FRACTION,
    QKEY_RE,
    REAL_MODEL,
    SOURCE_CALL_KEY,
    UNUSUAL_KEY,
    ControlImage,
    PromptRow,
    Question,
    StudyDefinition,
    StudyError,
    priming_word,
    scale_levels,
    squash,
    study_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import AppConfig

# -------------------------------------------------------------------------------------------- loading

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # prompt/control ids, model names
_SEED_LIMIT = 2**32

_TOP_KEYS: Mapping[str, Any] = MappingProxyType({
    "id": str,
    "version": int,
    "title": str,
    "instructions": str,
    "modality": str,
    "design": str,
    "models": list,
    "seeds": list,
    "prompts": str,
    "controls": str,
    "overlap_k": int,
    "repeat_fraction": (int, float),
    "allow_answer_changes": bool,
    "raters": list,
    "open": bool,
    "n_raters": int,
    "questions": list,
    "catch_rate": (int, float),
    "catch_kinds": list,
    "rater_groups": dict,
    "mark_artifacts": bool,
    "mark_confidence": bool,
    "disclosed_order": str,
    "notice_words": list,
    "blinding_index": bool,
})
_REQUIRED_KEYS = ("id", "version", "title", "instructions", "modality", "design", "models", "seeds", "prompts", "overlap_k")
_QUESTION_KEYS = ("key", "kind", "label", "levels", "options", "required")
PROMPT_COLUMNS = (("prompt_id", "prompt"), ("real_image", "real_image_id", "practice"))
_PRACTICE_VALUES: Mapping[str, bool] = MappingProxyType(
    {"": False, "no": False, "false": False, "0": False, "yes": True, "true": True, "1": True}
)
CONTROL_COLUMNS = (("control_id", "file", "caption"), ())
_TYPE_NAMES: Mapping[type, str] = MappingProxyType(
    {str: "a string", int: "an integer", list: "a list", bool: "true or false", dict: "a table"}
)


def _key_lines(text: str) -> dict[tuple[str, int, str], int]:
    """Best-effort map (table, index, key) -> line number of a TOML file ("" is the root table).

    tomllib reports no positions for valid documents; this scan lets semantic errors point at a line.
    Lines inside multi-line strings are skipped.
    """
    lines: dict[tuple[str, int, str], int] = {}
    table, index, counts, in_string = "", 0, {}, ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string:
            if line.count(in_string) % 2 == 1:
                in_string = ""
            continue
        array = re.match(r"^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]", line)
        plain = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if array:
            table = array.group(1)
            counts[table] = counts.get(table, -1) + 1
            index = counts[table]
            lines.setdefault((table, index, ""), number)
            continue
        if plain:
            table, index = plain.group(1), 0
            lines.setdefault((table, index, ""), number)
            continue
        key = re.match(r"""^["']?([A-Za-z0-9_-]+)["']?\s*=""", line)
        if key:
            lines.setdefault((table, index, key.group(1)), number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return lines


def _read_text(path: Path, encoding: str, missing: str) -> str:
    """The file's text, decoded strictly; a missing file or bad bytes is a StudyError naming the file."""
    try:
        return path.read_bytes().decode(encoding)
    except FileNotFoundError:
        raise StudyError(path, None, missing) from None
    except UnicodeDecodeError as exc:
        raise StudyError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class _Toml:
    """The parsed study.toml plus where its keys are, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = _read_text(path, "utf-8", "study file not found")
        try:
            self.data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = re.search(r"\(at line (\d+), column \d+\)", message)
            line = int(found.group(1)) if found else None
            reason = message[: found.start()].strip() if found else message
            raise StudyError(path, line, f"TOML syntax error: {reason}") from None
        self.lines = _key_lines(text)

    def error(self, key: str | None, reason: str, table: str = "", index: int = 0) -> StudyError:
        line = self.lines.get((table, index, key or ""))
        if line is None:  # a question's table header, or a key written as a [table]
            line = self.lines.get((table, index, "") if table else (key or "", 0, ""))
        return StudyError(self.path, line, reason)



def load_studies(config: "AppConfig") -> dict[str, StudyDefinition]:
    """Every study the config names, checked against the config's models; a bad file stops start-up."""
    known = [m.name for m in config.models]
    out: dict[str, StudyDefinition] = {}
    for path in config.studies:
        study = load_study(path, known_models=known)
        of_modality = {s.name for s in config.models_for(study.modality)}
        wrong = [m for m in study.models if of_modality and m not in of_modality]
        if wrong:
            raise StudyError(path, None, f"model(s) {', '.join(wrong)} are not {study.modality} models in the config")
        out[study_key(study)] = study
    return out


def load_study(
    path: Path | str,
    known_models: Collection[str] | None = None,
    known_modalities: Collection[str] = MODALITIES,
) -> StudyDefinition:
    """Read and check a study (a ``study.toml`` path, or a folder holding one).

    ``known_models``: registry names the study may use (unchecked when None).
    Raises :class:`StudyError` on the first problem found (the checks run in file-format order: keys, the header,
    models, seeds, raters, overlap, questions, the CSV files, catch trials, rater groups).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "study.toml"
    toml = _Toml(path)
    data = toml.data
    _check_keys(toml)
    header = _check_header(toml, known_modalities)
    models = _check_models(toml, data["models"], known_models)
    seeds = _check_seeds(toml, data["seeds"])
    raters, n_raters, is_open = _check_raters(toml, data)
    overlap_k, repeat_fraction = _check_overlap(toml, n_raters)
    questions = _check_questions(toml, data.get("questions"))
    prompts_path, prompts, controls_path, controls = _read_files(toml)
    _check_design_needs(toml, header["design"], models, prompts_path, prompts)
    catch_rate, catch_kinds = _check_catch(toml, data, prompts, controls)
    rater_groups = _check_groups(toml, data.get("rater_groups"), raters, is_open)
    if data.get("mark_confidence", False) and not data.get("mark_artifacts", False):
        raise toml.error("mark_confidence", "mark_confidence = true needs mark_artifacts = true (a confidence is "
                         "given per artifact mark)")
    disclosure = _check_naive_disclosed(toml, header, questions, prompts_path, prompts, controls)

    return StudyDefinition(
        **header,
        models=models,
        seeds=seeds,
        prompts=prompts,
        controls=controls,
        raters=raters,
        n_raters=n_raters,
        overlap_k=overlap_k,
        repeat_fraction=repeat_fraction,
        questions=questions,
        allow_answer_changes=data.get("allow_answer_changes", False),
        open=is_open,
        catch_rate=catch_rate,
        catch_kinds=catch_kinds,
        rater_groups=rater_groups,
        mark_artifacts=data.get("mark_artifacts", False),
        mark_confidence=data.get("mark_confidence", False),
        **disclosure,
        blinding_index=data.get("blinding_index", False),
        source_path=path,
        prompts_path=prompts_path,
        controls_path=controls_path,
    )


def _check_keys(toml: _Toml) -> None:
    """Every top-level key known and of its type; every required key present."""
    for key, value in toml.data.items():
        if key not in _TOP_KEYS:
            hint = " (question keys belong in a [[questions]] table)" if key in _QUESTION_KEYS else ""
            raise toml.error(key, f"unknown key {key!r}{hint}; known keys: {', '.join(_TOP_KEYS)}")
        expected = _TOP_KEYS[key]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            what = "a number" if expected == (int, float) else _TYPE_NAMES[expected]  # type: ignore[index]
            raise toml.error(key, f"{key} must be {what}, not {value!r}")
    for key in _REQUIRED_KEYS:
        if key not in toml.data:
            raise StudyError(toml.path, None, f"missing required key {key!r}")


def _check_header(toml: _Toml, known_modalities: Collection[str]) -> dict[str, Any]:
    """The study's id, version, title, instructions, modality and design (:class:`StudyDefinition` fields)."""
    data = toml.data
    study_id = data["id"]
    if not _ID_RE.match(study_id):
        raise toml.error("id", f"id {study_id!r} must be 1-64 lowercase letters, digits, '_' or '-'")
    version = data["version"]
    if version < 1:
        raise toml.error("version", f"version must be >= 1, not {version}")
    title, instructions = data["title"].strip(), data["instructions"].strip()
    for key, text in (("title", title), ("instructions", instructions)):
        if not text:
            raise toml.error(key, f"{key} is empty")
    modality = data["modality"]
    if modality not in known_modalities:
        raise toml.error("modality", f"unknown modality {modality!r}; expected one of {', '.join(known_modalities)}")
    design = data["design"]
    if design not in DESIGNS:
        raise toml.error("design", f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")
    return {"id": study_id, "version": version, "title": title, "instructions": instructions,
            "modality": modality, "design": design}


def _check_overlap(toml: _Toml, n_raters: int) -> tuple[int, float]:
    """``overlap_k`` (raters per item, at most ``n_raters``) and ``repeat_fraction``."""
    overlap_k = toml.data["overlap_k"]
    if overlap_k < 1:
        raise toml.error("overlap_k", f"overlap_k must be >= 1, not {overlap_k}")
    if overlap_k > n_raters:
        raise toml.error("overlap_k", f"overlap_k = {overlap_k} is larger than the number of raters ({n_raters})")
    repeat_fraction = float(toml.data.get("repeat_fraction", 0.0))
    if not 0.0 <= repeat_fraction <= MAX_REPEAT_FRACTION:
        raise toml.error("repeat_fraction", f"repeat_fraction must be in [0, {MAX_REPEAT_FRACTION}], not {repeat_fraction}")
    return overlap_k, repeat_fraction


def _read_files(toml: _Toml) -> tuple[Path, tuple[PromptRow, ...], Path | None, tuple[ControlImage, ...]]:
    """The prompt bank and (when ``controls`` is given) the controls: (prompts path, prompts, controls folder,
    controls), paths relative to the study file."""
    folder = toml.path.parent
    prompts_path = folder / toml.data["prompts"]
    prompts = _read_prompts(prompts_path)
    controls_path = folder / toml.data["controls"] if "controls" in toml.data else None
    controls: tuple[ControlImage, ...] = ()
    if controls_path is not None:
        if not controls_path.is_dir():
            raise toml.error("controls", f"controls folder {controls_path} does not exist")
        controls = _read_controls(controls_path / "captions.csv")
    return prompts_path, prompts, controls_path, controls


def _check_design_needs(
    toml: _Toml, design: str, models: Sequence[str], prompts_path: Path, prompts: Sequence[PromptRow]
) -> None:
    """What a design needs: forced choice a real image for every prompt, ranking two models or more."""
    if design == "forced_choice":
        for row in prompts:
            if row.real_image is None:
                raise StudyError(prompts_path, row.line, f"design = \"forced_choice\" needs a real_image for every "
                                 f"prompt; prompt {row.prompt_id!r} has none")
    if design == "ranking" and len(models) < 2:
        raise toml.error("models", "design = \"ranking\" needs at least two models to rank")


def _check_naive_disclosed(
    toml: _Toml, header: Mapping[str, Any], questions: Sequence[Question], prompts_path: Path,
    prompts: Sequence[PromptRow], controls: Sequence[ControlImage],
) -> dict[str, Any]:
    """The naive → disclosed design's options (``disclosed_order``, ``notice_words``) and its rule: nothing a rater
    reads in phase 1 (title, instructions, questions, prompts, captions) mentions synthesis, models or "real"; no
    catch screens (broken images prime), no artifact marks, no answer changes (a naive answer changed after the
    disclosure is no longer naive)."""
    data = toml.data
    if header["design"] != "naive_disclosed":
        for key in ("disclosed_order", "notice_words"):
            if key in data:
                raise toml.error(key, f"{key} belongs to design = \"naive_disclosed\" only")
        return {}
    order = data.get("disclosed_order", "fresh")
    if order not in DISCLOSED_ORDERS:
        raise toml.error("disclosed_order", f"disclosed_order must be one of {', '.join(DISCLOSED_ORDERS)}, "
                         f"not {order!r}")
    words = data.get("notice_words", list(DEFAULT_NOTICE_WORDS))
    if not words or not all(isinstance(w, str) and w.strip(" *") for w in words):
        raise toml.error("notice_words", "notice_words must be a non-empty list of words (\"*\" = any ending)")
    for key in ("allow_answer_changes", "mark_artifacts"):
        if data.get(key):
            raise toml.error(key, f"design = \"naive_disclosed\" cannot use {key} (phase 1 must stay naive)")
    if float(data.get("catch_rate", 0)) > 0:
        raise toml.error("catch_rate", "design = \"naive_disclosed\" has no catch screens (a broken image primes "
                         "the reader): leave catch_rate out")
    texts = [(header["title"], "title"), (header["instructions"], "instructions")]
    for q in questions:
        if q.key in (UNUSUAL_KEY, SOURCE_CALL_KEY):
            raise toml.error("questions", f"question key {q.key!r} is reserved by design = \"naive_disclosed\"")
        texts += [(t, f"question {q.key!r}") for t in (q.label, *q.options, *(label for _, label in q.levels))]
    for text, where in texts:
        if word := priming_word(text):
            hint = " (the default questions ask about realism: give your own [[questions]])" if "question" in where else ""
            raise toml.error("questions" if "question" in where else where, f"design = \"naive_disclosed\": the "
                             f"{where} mentions {word!r}; nothing in phase 1 may mention synthesis, models or "
                             f"\"real\"{hint}")
    for row in prompts:
        if word := priming_word(row.prompt):
            raise StudyError(prompts_path, row.line, f"design = \"naive_disclosed\": prompt {row.prompt_id!r} "
                             f"mentions {word!r}, which phase 1 shows; reword it")
    for control in controls:
        if word := priming_word(control.caption):
            raise StudyError(control.path, control.line, f"design = \"naive_disclosed\": the caption of "
                             f"{control.control_id!r} mentions {word!r}, which phase 1 shows; reword it")
    return {"disclosed_order": order, "notice_words": tuple(w.strip() for w in words)}


def find_studies(root: Path | str) -> tuple[Path, ...]:
    """The ``<root>/*/study.toml`` files, sorted (other TOML files in ``root`` are not studies)."""
    return tuple(sorted(Path(root).glob("*/study.toml")))


def _check_models(toml: _Toml, models: list[Any], known: Collection[str] | None) -> tuple[str, ...]:
    if not models:
        raise toml.error("models", "models is empty: list at least one registry model")
    for name in models:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise toml.error("models", f"model name {name!r} must be letters, digits, '_', '.' or '-'")
        if name == REAL_MODEL:
            raise toml.error("models", f"{REAL_MODEL!r} is reserved for real images and cannot be a model")
        if name == "dont_know":  # the stored "Don't know" of the model question (blinding_index)
            raise toml.error("models", "'dont_know' is reserved for the model question's \"Don't know\"")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise toml.error("models", f"models listed twice: {', '.join(duplicates)}")
    if known is not None:
        unknown = [m for m in models if m not in known]
        if unknown:
            raise toml.error(
                "models", f"unknown models: {', '.join(unknown)}; the registry has: {', '.join(sorted(known)) or 'none'}"
            )
    return tuple(models)


def _check_seeds(toml: _Toml, seeds: list[Any]) -> tuple[int, ...]:
    if not seeds:
        raise toml.error("seeds", "seeds is empty: list at least one integer seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
            raise toml.error("seeds", f"seed {seed!r} must be an integer in [0, 2**32)")
    if len(set(seeds)) != len(seeds):
        raise toml.error("seeds", "seeds repeat")
    return tuple(seeds)


def _check_raters(toml: _Toml, data: Mapping[str, Any]) -> tuple[tuple[str, ...], int, bool]:
    raters = data.get("raters", [])
    is_open = data.get("open", False)
    if is_open:
        if raters:
            raise toml.error("raters", "an open study takes no rater list: remove raters or set open = false")
        if "n_raters" not in data:
            raise toml.error("open", "an open study needs n_raters (how many rater slots to balance over)")
        if data["n_raters"] < 1:
            raise toml.error("n_raters", f"n_raters must be >= 1, not {data['n_raters']}")
        return (), data["n_raters"], True
    if not raters:
        raise toml.error("raters", "list the planned raters (raters = [...]) or set open = true with n_raters")
    names: list[str] = []
    for name in raters:
        if not isinstance(name, str) or not name.strip():
            raise toml.error("raters", f"rater name {name!r} must be a non-empty string")
        names.append(name.strip())
    folded = [name_key(n) for n in names]  # names compare as the app compares them at sign-in
    duplicates = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
    if duplicates:
        raise toml.error("raters", f"raters listed twice: {', '.join(duplicates)}")
    if "n_raters" in data and data["n_raters"] != len(names):
        raise toml.error("n_raters", f"n_raters = {data['n_raters']} but {len(names)} raters are listed")
    return tuple(names), len(names), False


def _check_catch(
    toml: _Toml, data: Mapping[str, Any], prompts: Sequence[PromptRow], controls: Sequence[ControlImage]
) -> tuple[float, tuple[str, ...]]:
    rate = float(data.get("catch_rate", 0.0))
    if not 0.0 <= rate <= MAX_CATCH_RATE:
        raise toml.error("catch_rate", f"catch_rate must be in [0, {MAX_CATCH_RATE}], not {rate}")
    kinds = data.get("catch_kinds")
    if kinds is None:
        if rate > 0:
            raise toml.error("catch_rate", f"catch_rate > 0 needs catch_kinds (some of {', '.join(CATCH_KINDS)})")
        return rate, ()
    if not kinds:
        raise toml.error("catch_kinds", "catch_kinds is empty: leave it out, or list some of " + ", ".join(CATCH_KINDS))
    for kind in kinds:
        if kind not in CATCH_KINDS:
            raise toml.error("catch_kinds", f"unknown catch kind {kind!r}; expected some of {', '.join(CATCH_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise toml.error("catch_kinds", "catch_kinds repeat")
    if rate <= 0:
        raise toml.error("catch_kinds", "catch_kinds without catch_rate > 0: set catch_rate (e.g. 0.1)")
    if CATCH_REAL_KIND in kinds and not controls and not any(p.real_image is not None for p in prompts):
        raise toml.error("catch_kinds", "catch kind \"real\" needs known real images (controls or prompt real images)")
    return rate, tuple(kinds)


def _check_groups(
    toml: _Toml, raw: Mapping[str, Any] | None, raters: Sequence[str], is_open: bool
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if is_open:
        raise toml.error("rater_groups", "rater_groups name listed raters: an open study has none")
    if not raw:
        raise toml.error("rater_groups", "rater_groups is empty: leave it out or name some groups")
    listed = {name_key(r): r for r in raters}
    seen: dict[str, str] = {}
    out = []
    for group, names in raw.items():
        def fail(reason: str) -> StudyError:
            return toml.error(group, f"rater_groups.{group}: {reason}", "rater_groups")

        if not QKEY_RE.match(group):
            raise fail("a group name must be lowercase letters, digits and '_'")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise fail("must be a non-empty list of rater names")
        clean = []
        for name in names:
            folded = name_key(name)
            if folded not in listed:
                raise fail(f"{name!r} is not one of the study's raters ({', '.join(raters)})")
            if folded in seen:
                raise fail(f"{name!r} is already in group {seen[folded]!r}")
            seen[folded] = group
            clean.append(listed[folded])
        out.append((group, tuple(clean)))
    return tuple(out)


def _check_questions(toml: _Toml, raw: list[Any] | None) -> tuple[Question, ...]:
    if raw is None:
        return DEFAULT_QUESTIONS
    if not raw:
        raise toml.error("questions", "questions is empty: leave it out for the default questions")
    out: list[Question] = []
    for index, entry in enumerate(raw):
        def fail(key: str | None, reason: str, index: int = index) -> StudyError:
            return toml.error(key, f"[[questions]] #{index + 1}: {reason}", "questions", index)

        if not isinstance(entry, dict):
            raise fail(None, "each question must be a [[questions]] table")
        for key in entry:
            if key not in _QUESTION_KEYS:
                hint = " (top-level keys must come before the first [[questions]])" if key in _TOP_KEYS else ""
                raise fail(key, f"unknown key {key!r}{hint}; known keys: {', '.join(_QUESTION_KEYS)}")
        key = entry.get("key")
        if not isinstance(key, str):
            raise fail("key", "key is missing or not a string")
        if key in BUILTIN_QUESTIONS:
            extra = sorted(set(entry) - {"key", "required"})
            if extra:
                raise fail(extra[0], f"{key!r} is a built-in question: give only key (and required), or choose another key")
            question = BUILTIN_QUESTIONS[key]
            if "required" in entry:
                if not isinstance(entry["required"], bool):
                    raise fail("required", "required must be true or false")
                question = Question(question.key, question.kind, question.label, question.levels,
                                    question.options, entry["required"])
        else:
            kind = entry.get("kind")
            levels = entry.get("levels", [])
            options = entry.get("options", [])
            if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
                raise fail("levels", "levels must be a list of labels (scored 1..n)")
            if not isinstance(options, list) or not all(isinstance(x, str) for x in options):
                raise fail("options", "options must be a list of strings")
            try:
                question = Question(
                    key=key,
                    kind=kind,  # type: ignore[arg-type]
                    label=entry.get("label", ""),
                    levels=scale_levels(*(x.strip() for x in levels)),
                    options=tuple(x.strip() for x in options),
                    required=entry.get("required", kind == "scale"),
                )
            except ValueError as exc:
                raise fail(None, str(exc)) from None
        if any(q.key == question.key for q in out):
            raise fail("key", f"question key {key!r} is used twice")
        out.append(question)
    return tuple(out)


def read_csv_rows(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a strict CSV as (first line, {column: stripped value}); blank lines are skipped. Every CSV the app
    reads (prompt banks, captions, batch prompt lists) goes through here, so errors name the true line (a quoted
    field may span lines) and the same rules hold everywhere. ``columns``: (required, optional) names."""
    required, optional = columns
    text = _read_text(path, "utf-8-sig", "file not found")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    header_line = 1
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise StudyError(path, start, f"malformed CSV ({exc}); quote fields that contain commas or quotes") from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in row], start
            for name in header:
                if name not in required and name not in optional:
                    raise StudyError(path, start, f"unknown column {name!r}; the header must be {expected}")
                if header.count(name) > 1:
                    raise StudyError(path, start, f"column {name!r} appears twice in the header")
            for name in required:
                if name not in header:
                    raise StudyError(path, start, f"missing column {name!r}; the header must be {expected}")
            continue
        if len(row) != len(header):
            raise StudyError(
                path, start,
                f"expected {len(header)} fields ({','.join(header)}), found {len(row)}; "
                "quote fields that contain commas",
            )
        rows.append((start, {name: cell.strip() for name, cell in zip(header, row)}))
    if header is None:
        raise StudyError(path, None, f"empty file: expected a header {expected}")
    if not rows:
        raise StudyError(path, header_line, "no rows after the header")
    return rows


def _image_sha256(csv_path: Path, line: int, image: Path) -> str:
    if not image.is_file():
        raise StudyError(csv_path, line, f"real image {image} does not exist")
    try:
        with Image.open(image) as opened:
            opened.verify()
    except Exception as exc:  # PIL raises many kinds for unreadable files
        raise StudyError(csv_path, line, f"real image {image} is not a readable image ({exc})") from None
    return hashlib.sha256(image.read_bytes()).hexdigest()


def _rows_with_ids(path: Path, columns: tuple[tuple[str, ...], tuple[str, ...]], column: str):
    """``read_csv_rows``'s rows, each one's ``column`` checked: not empty, a valid name, not on an earlier row."""
    seen: dict[str, int] = {}
    for line, row in read_csv_rows(path, columns):
        value = row[column]
        if not value:
            raise StudyError(path, line, f"{column} is empty")
        if not _NAME_RE.match(value):
            raise StudyError(path, line, f"{column} {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if value in seen:
            raise StudyError(path, line, f"duplicate {column} {value!r} (first on line {seen[value]})")
        seen[value] = line
        yield line, row


def _read_prompts(path: Path) -> tuple[PromptRow, ...]:
    out: list[PromptRow] = []
    for line, row in _rows_with_ids(path, PROMPT_COLUMNS, "prompt_id"):
        prompt_id, prompt = row["prompt_id"], squash(row["prompt"])
        if not prompt:
            raise StudyError(path, line, f"prompt {prompt_id!r} has empty text")
        real, sha = None, ""
        if row.get("real_image"):
            real = path.parent / row["real_image"]
            sha = _image_sha256(path, line, real)
        flag = row.get("practice", "").lower()
        if flag not in _PRACTICE_VALUES:
            raise StudyError(path, line, f"practice must be yes or no (or empty), not {row['practice']!r}")
        out.append(PromptRow(prompt_id, prompt, real, line, row.get("real_image_id", ""), sha, _PRACTICE_VALUES[flag]))
    if all(p.practice for p in out):
        raise StudyError(path, out[-1].line, "every prompt is a practice prompt: the study needs at least one "
                         "prompt that is not (practice = no)")
    return tuple(out)


def _read_controls(path: Path) -> tuple[ControlImage, ...]:
    out: list[ControlImage] = []
    for line, row in _rows_with_ids(path, CONTROL_COLUMNS, "control_id"):
        control_id, caption = row["control_id"], squash(row["caption"])
        if not row["file"]:
            raise StudyError(path, line, f"control {control_id!r} names no file")
        if not caption:
            raise StudyError(path, line, f"control {control_id!r} has an empty caption")
        image = path.parent / row["file"]
        out.append(ControlImage(control_id, image, caption, _image_sha256(path, line, image), line))
    return tuple(out)

