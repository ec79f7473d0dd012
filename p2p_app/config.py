"""Application settings, declared as data, loaded from a TOML file into an immutable object.

Every setting has a name, a default and a help text (``SETTINGS``); the settings table of docs/cli.md and a test are
checked against this list. Model entries (``[[models]]``) are passed to ``generators.ModelSpec``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from generators.base import MODALITIES
from generators.registry import ModelSpec

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# A source checkout keeps the example studies at the top-level studies/; an installed wheel ships them as
# p2p_app/studies (pyproject's package-dir). The checkout's folder wins where both exist.
DEFAULT_CONFIG = next(
    (p for p in (PACKAGE_ROOT / "studies" / "demo.toml", Path(__file__).resolve().parent / "studies" / "demo.toml")
     if p.is_file()),
    PACKAGE_ROOT / "studies" / "demo.toml",
)
SPACES_PERSISTENT_DIR = Path("/data")  # a Hugging Face Space's persistent storage, when enabled


def default_data_dir() -> str:
    """``p2p_data`` in the working directory; on a Space with persistent storage, ``/data/p2p_data``."""
    if os.environ.get("SPACE_ID") and SPACES_PERSISTENT_DIR.is_dir() and os.access(SPACES_PERSISTENT_DIR, os.W_OK):
        return str(SPACES_PERSISTENT_DIR / "p2p_data")
    return "p2p_data"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    env: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("title", "Prompt to Polyp", "Title shown at the top of every page."),
    Setting(
        "demo_models",
        False,
        "Say on every page that the models are random-weight demo models whose images are noise.",
    ),
    Setting(
        "reveal_after_rating",
        True,
        "In the live arena, show which model made which image once the trial's ratings are stored.",
    ),
    Setting(
        "arena_blinding_index",
        False,
        "In the live arena, after a trial's ratings are stored and before the reveal, ask which model made each image "
        "(the modality's models or \"don't know\"); the report's blinding index. The reveal waits for the answers.",
    ),
    Setting(
        "arena_judgement",
        "scores",
        "How the live arena asks for judgements: \"scores\" (1-5 realism and alignment per image), \"ranking\" "
        "(order all images best to worst for realism and for alignment) or \"choice\" (the rater picks one of the "
        "two for each trial; scores first).",
    ),
    Setting(
        "access_code",
        "",
        "If not empty, raters must type this code to sign in to the live arena.",
        env="P2P_ACCESS_CODE",
    ),
    Setting(
        "admin_password",
        "",
        "Password of the admin area at /admin. Empty: the admin area refuses every sign-in. "
        "Set it through the environment in production rather than in a file.",
        env="P2P_ADMIN_PASSWORD",
    ),
    Setting(
        "arena_limits",
        "auto",
        "Limits on live-arena generation per address and per signed-in session: \"auto\" (on when no "
        "access_code is set), \"on\" or \"off\". The disk budget and the free-space reserve apply always.",
    ),
    Setting("arena_per_address_per_hour", 30, "Live-arena Generates one address may run in any hour (0: no limit); new arena "
            "sign-ins per address are limited to twice this."),
    Setting("arena_per_session_per_hour", 20,
            "Live-arena Generates one signed-in arena session may run in any hour (0: no limit)."),
    Setting(
        "arena_disk_budget_mb",
        2000,
        "Disk budget of live-arena images in MB: past it, unrated arena images older than 15 minutes are deleted; "
        "when that is not enough the arena refuses new Generates. Study images never count and are never deleted.",
    ),
    Setting(
        "disk_reserve_mb",
        1024,
        "Free disk space in MB kept for studies: below it the live arena refuses new Generates (study submits go on).",
    ),
    Setting(
        "behind_proxy",
        False,
        "The server sits behind one reverse proxy: a client's address is the last X-Forwarded-For hop (always "
        "so on a Hugging Face Space). Used by the per-address limits.",
    ),
    Setting(
        "admin_trusted_networks",
        [],
        "Addresses or networks (CIDR, e.g. \"203.0.113.7\" or \"10.0.0.0/8\") whose admin sign-ins are never "
        "slowed down by the sign-in throttle: the owner's known address.",
    ),
    Setting("presentation_size", 512, "Every image is re-encoded to this square pixel size before a rater sees it."),
    Setting("max_prompt_chars", 1000, "Longest prompt a rater may type, in characters."),
    Setting(
        "data_dir",
        "p2p_data",
        "Folder for the database, presentation images and built tiny models (relative to the working directory; "
        "on a Hugging Face Space with persistent storage the default is /data/p2p_data).",
        env="P2P_DATA_DIR",
    ),
    Setting(
        "model_dir",
        "",
        "Folder where built-in tiny models are built and cached. Empty: <data_dir>/models.",
        env="P2P_MODEL_DIR",
    ),
    Setting(
        "database_url",
        "",
        "SQLAlchemy URL of the database. Empty: SQLite at <data_dir>/p2p.sqlite.",
        env="P2P_DATABASE_URL",
    ),
    Setting(
        "model_token",
        "",
        "Bearer token of the generation service. `p2p serve-models` requires it on every request when set; the app "
        "sends it to model entries whose source is a service address. Set it through the environment.",
        env="P2P_MODEL_TOKEN",
    ),
    Setting(
        "model_timeout",
        300,
        "Seconds the app waits for one image from a generation service (a model entry whose source is an "
        "http(s):// address) before telling the rater the service is not answering.",
        env="P2P_MODEL_TIMEOUT",
    ),
    Setting("studies", [], "Study definition files (TOML) served to raters, relative to this config file."),
    Setting(
        "pack",
        "",
        "Presenter mode: folder of a study pack (`p2p study pack`), relative to this config file. No model is "
        "loaded; the study is served from the pack's images and the live arena offers the pack's prompts.",
    ),
)

_SETTING_NAMES = {s.name for s in SETTINGS}
ARENA_JUDGEMENTS = ("scores", "ranking", "choice")
ARENA_LIMITS = ("auto", "on", "off")
"""Values of ``arena_judgement``; a trial is judged by "scores" or "ranking" (``AppConfig.arena_judgements``)."""
_SECTIONS = {"models", "examples"}


@dataclass(frozen=True)
class AppConfig:
    title: str
    demo_models: bool
    reveal_after_rating: bool
    access_code: str
    admin_password: str
    presentation_size: int
    max_prompt_chars: int
    data_dir: Path
    model_dir: str
    database_url: str
    studies: tuple[Path, ...]
    models: tuple[ModelSpec, ...]
    pack: Path | None = None
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: Path | None = None
    arena_judgement: str = "scores"
    model_token: str = field(default="", repr=False)
    model_timeout: int = 300
    arena_limits: str = "auto"
    arena_per_address_per_hour: int = 30
    arena_per_session_per_hour: int = 20
    arena_disk_budget_mb: int = 2000
    disk_reserve_mb: int = 1024
    behind_proxy: bool = False
    admin_trusted_networks: tuple[str, ...] = ()
    arena_blinding_index: bool = False

    @property
    def arena_limited(self) -> bool:
        """Whether the per-address and per-session Generate limits apply (``arena_limits``)."""
        return self.arena_limits == "on" or (self.arena_limits == "auto" and not self.access_code)

    @property
    def trusts_forwarded_for(self) -> bool:
        """Take a client's address from the proxy's X-Forwarded-For (``behind_proxy``, or on a Space)."""
        return self.behind_proxy or bool(os.environ.get("SPACE_ID"))

    @property
    def arena_judgements(self) -> tuple[str, ...]:
        """The judgements a live trial may use, the default first: ("scores",), ("ranking",) or both."""
        return ("scores", "ranking") if self.arena_judgement == "choice" else (self.arena_judgement,)

    @property
    def ephemeral_storage(self) -> bool:
        """True on a Hugging Face Space whose SQLite database is not on the persistent ``/data`` disk: the
        Space's own disk is wiped at every restart, and every rating with it."""
        if not os.environ.get("SPACE_ID") or (self.database_url and not self.database_url.startswith("sqlite")):
            return False
        db = Path(self.resolved_database_url.split("///", 1)[-1]).resolve()
        return not db.is_relative_to(SPACES_PERSISTENT_DIR)

    @property
    def model_cache_dir(self) -> Path:
        return Path(self.model_dir).expanduser() if self.model_dir else self.data_dir / "models"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'p2p.sqlite').resolve()}"

    def modalities(self) -> tuple[str, ...]:
        present = {m.modality for m in self.models}
        return tuple(m for m in MODALITIES if m in present)

    def models_for(self, modality: str) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.modality == modality)


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the file and the entry."""


def load_config(path: str | Path | None = None, **overrides: Any) -> AppConfig:
    """Read a TOML config (default: the built-in demo) and apply environment and keyword overrides.

    Precedence: keyword overrides (CLI options) > environment variables > file > defaults.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    raw = _read_toml(path)
    values = _setting_values(path, raw, overrides)
    _check_values(path, values)
    models = _model_specs(path, raw.get("models", []))
    examples = _examples(path, raw.get("examples", {}))

    base = path.resolve().parent
    # Every setting is a field of AppConfig of the same name; these few are turned from their file form.
    converted = {
        "data_dir": Path(values["data_dir"]).expanduser(),
        "studies": tuple((base / p).resolve() for p in values["studies"]),
        "pack": (base / values["pack"]).resolve() if values["pack"] else None,
        "admin_trusted_networks": tuple(values["admin_trusted_networks"]),
    }
    return AppConfig(**{**values, **converted}, models=models, examples=examples, source=path.resolve())


def _read_toml(path: Path) -> dict[str, Any]:
    """The config file's tables, refused when missing, not TOML or naming an unknown setting."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - _SETTING_NAMES - _SECTIONS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return raw


def _setting_values(path: Path, raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting's value (override > environment > file > default), of its default's type (a digit string
    counts as an int)."""
    values: dict[str, Any] = {}
    for s in SETTINGS:
        value = raw.get(s.name, default_data_dir() if s.name == "data_dir" else s.default)
        if s.env and os.environ.get(s.env):
            value = os.environ[s.env]
        if overrides.get(s.name) is not None:
            value = overrides[s.name]
        expected = type(s.default)
        if expected is int and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: setting {s.name!r} must be {expected.__name__}, got {value!r}")
        values[s.name] = value
    return values


def _check_values(path: Path, values: Mapping[str, Any]) -> None:
    """The settings whose values are limited beyond their type: ranges, choices, networks."""
    if values["model_timeout"] <= 0:
        raise ConfigError(f"{path}: setting 'model_timeout' must be a positive number of seconds, "
                          f"got {values['model_timeout']!r}")
    if values["arena_limits"] not in ARENA_LIMITS:
        raise ConfigError(f"{path}: setting 'arena_limits' must be one of {', '.join(ARENA_LIMITS)}, "
                          f"got {values['arena_limits']!r}")  # fmt: skip
    for name in ("arena_per_address_per_hour", "arena_per_session_per_hour", "arena_disk_budget_mb",
                 "disk_reserve_mb"):
        if values[name] < 0:
            raise ConfigError(f"{path}: setting {name!r} must be 0 or more, got {values[name]!r}")
    for net in values["admin_trusted_networks"]:
        try:
            ipaddress.ip_network(net, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: setting 'admin_trusted_networks': {net!r} is not an address or network "
                              "(e.g. \"203.0.113.7\" or \"10.0.0.0/8\")") from None
    if values["arena_judgement"] not in ARENA_JUDGEMENTS:
        raise ConfigError(f"{path}: setting 'arena_judgement' must be one of {', '.join(ARENA_JUDGEMENTS)}, "
                          f"got {values['arena_judgement']!r}")  # fmt: skip


def _model_specs(path: Path, entries: list[Any]) -> tuple[ModelSpec, ...]:
    """The ``[[models]]`` entries as registry specs: valid, uniquely named, none called "real"."""
    models = []
    names: set[str] = set()
    for i, entry in enumerate(entries, start=1):
        try:
            spec = ModelSpec.from_dict(entry)
        except (ValueError, TypeError) as exc:
            label = entry.get("name", f"#{i}") if isinstance(entry, dict) else f"#{i}"
            raise ConfigError(f"{path}: model entry {label!r}: {exc}") from None
        if spec.name in names:
            raise ConfigError(f"{path}: model name {spec.name!r} is used twice")
        if spec.name == "real":
            raise ConfigError(f"{path}: 'real' is reserved for real control images; rename the model")
        names.add(spec.name)
        models.append(spec)
    return tuple(models)


def _examples(path: Path, table: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The ``[examples]`` table: modality -> example prompts."""
    examples: dict[str, tuple[str, ...]] = {}
    for modality, prompts in table.items():
        if modality not in MODALITIES:
            raise ConfigError(f"{path}: [examples] has unknown modality {modality!r}")
        examples[modality] = tuple(str(p) for p in prompts)
    return examples
