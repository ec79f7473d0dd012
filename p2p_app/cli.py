"""The ``p2p`` command line: thin commands over the app object; domain errors become clean CLI errors.

Heavy imports (torch, diffusers, gradio) happen inside the commands that need them, so ``p2p --help``
and ``p2p export`` start fast.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from generators.registry import quiet_library_progress

CONFIG_HELP = "Config file (TOML). Default: the built-in demo with tiny models."


def _common(fn: Callable) -> Callable:
    """--config, --data-dir and --database-url, shared by every command that opens the app."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
    @click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                  help="Folder for the database, images and built tiny models (default: ./p2p_data).")
    @click.option("--database-url", default=None, help="SQLAlchemy database URL (default: SQLite in the data dir).")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def _domain_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .config import ConfigError
        from .migrations import NewerSchema
        from .service import UserError
        from .storage import StorageError
        from .study import StudyError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, UserError, StorageError, StudyError, FileNotFoundError, NewerSchema) as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:  # e.g. a model entry the registry refuses at start-up
            raise click.ClickException(str(exc)) from None

    return wrapper


@contextmanager
def _resumable(bar: Any) -> Iterator[None]:
    """Close the progress bar; on Ctrl-C say that the work done is kept (each image is stored as it is made)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("\nInterrupted: images made so far are stored; run the same command again to resume.", err=True)
        sys.exit(130)
    finally:
        bar.close()


def _open_app(config_path: str | None, data_dir: str | None, database_url: str | None, read_only: bool = False):
    """The app through the one factory; ``read_only`` commands never create a database (clear error instead)."""
    from .startup import create

    return create(config_path, data_dir=data_dir, database_url=database_url, read_only=read_only)


def _open_desk(config_path: str | None, data_dir: str | None, database_url: str | None, read_only: bool = False):
    """The researcher's desk (``p2p_app.desk.ResearchDesk``) over the app :func:`_open_app` opens."""
    from .startup import create_desk

    return create_desk(config_path, data_dir=data_dir, database_url=database_url, read_only=read_only)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Prompt to Polyp: blinded clinician evaluation of medical text-to-image models."""


@main.command()
@_common
@click.option("--host", default="127.0.0.1", show_default=True, envvar="GRADIO_SERVER_NAME",
              help="Address to listen on (0.0.0.0 for all). Env: GRADIO_SERVER_NAME.")
@click.option("--port", default=7860, show_default=True, type=int, envvar=["GRADIO_SERVER_PORT", "PORT"],
              help="Port to listen on. Env: GRADIO_SERVER_PORT or PORT.")
@click.option("--prepare-studies/--no-prepare-studies", default=None,
              help="Generate and freeze studies that are not ready yet, in the background once the server "
                   "listens. Default: only studies whose models are all built-in tiny models.")
@_domain_errors
def serve(config_path, data_dir, database_url, host, port, prepare_studies) -> None:
    """Start the rater app (/) and the admin app (/admin); models load and studies are prepared in the
    background once the server answers."""
    from .startup import serve as run_server

    app = _open_app(config_path, data_dir, database_url)
    click.echo(f"Database: {app.config.resolved_database_url}")
    if app.config.ephemeral_storage:
        click.echo(f"WARNING: {app.config.data_dir} is on ephemeral disk: ratings are lost when the Space restarts. "
                   "Enable persistent storage (/data) or set P2P_DATABASE_URL.", err=True)
    if not app.config.admin_password:
        click.echo("Admin area /admin is locked: set P2P_ADMIN_PASSWORD to open it.")
    try:
        run_server(app, host=host, port=port, prepare=prepare_studies, echo=click.echo)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("serve-models")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--batching", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: run concurrent requests for one model as one pipeline call where that gives the same "
                   "pixels as one call per image (checked per model at start-up); off: one call per image.")
@_domain_errors
def serve_models(config_path, host, port, batching) -> None:
    """Serve the config's models over HTTP (generation as a service): POST /v1/images/generations, GET /v1/models.
    App configs then name it as a model's source (source = "http://HOST:PORT"). Token: P2P_MODEL_TOKEN."""
    from .startup import create_model_service, serve_models as run_service

    service = create_model_service(config_path, batching=batching)
    if not service.token and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("WARNING: no model_token set (P2P_MODEL_TOKEN): anyone who reaches this address can generate.",
                   err=True)
    try:
        run_service(service, host=host, port=port, echo=click.echo)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("out", type=click.Path(dir_okay=False))
@_common
@click.option("--study", default=None, help="Only this study (id, id@vN, or 'live'). Default: everything.")
@click.option("--format", "fmt", type=click.Choice(["long", "wide", "parquet", "marks", "guesses", "metrics",
                                                     "metrics-models"]),
              default=None,
              help="long (one row per answer), wide (one row per image), parquet (the long table as Parquet), "
                   "marks (one row per artifact mark), guesses (one row per image's model guess, blinding_index), or the tables of `p2p metrics` (metrics: one row per generated "
                   "image and encoder; metrics-models: one row per model, encoder and metric; .csv or .parquet; needs "
                   "--study). The file type comes from OUT's name: .csv, .xlsx (Excel) or .parquet. Default: long.")
@_domain_errors
def export(out, config_path, data_dir, database_url, study, fmt) -> None:
    """Write the ratings to OUT (analysis-ready, models unblinded)."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    click.echo(desk.export(out, study, fmt))


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    if not seeds or any(s < 0 for s in seeds):
        raise click.BadParameter("give seeds like 0,1,2 or 0-9")
    return seeds


@main.command()
@_common
@click.option("--prompts", "prompts_csv", required=True, type=click.Path(dir_okay=False),
              help="CSV with columns prompt_id,prompt[,modality].")
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0,1,2 or 0-9.")
@click.option("--models", default=None, help="Comma-separated model names (default: all of each prompt's modality).")
@_domain_errors
def generate(config_path, data_dir, database_url, prompts_csv, seeds, models) -> None:
    """Pre-generate images for PROMPTS × SEEDS × MODELS (resumable; works under `accelerate launch`)."""
    quiet_library_progress()
    from tqdm import tqdm

    from .batch import my_share, plan_jobs, read_prompts, run_jobs

    try:
        seed_list = _parse_seeds(seeds)
    except ValueError:
        raise click.BadParameter("give seeds like 0,1,2 or 0-9", param_hint="--seeds") from None
    app = _open_app(config_path, data_dir, database_url)
    prompts = read_prompts(prompts_csv)
    jobs = my_share(plan_jobs(app, prompts, seed_list, models.split(",") if models else None))
    bar = tqdm(total=len(jobs), unit="img", desc=f"generating (process {os.environ.get('RANK', '0')})")
    with _resumable(bar):
        report = run_jobs(app, jobs, on_done=lambda job, status: bar.update(1))
    click.echo(f"made {report.made}, already there {report.skipped}, failed {len(report.failures)}")
    for job, message in report.failures:
        click.echo(f"FAILED {job.model} {job.prompt_id} seed {job.seed}: {message}", err=True)
    if report.failures:
        sys.exit(1)


@main.group()
def study() -> None:
    """Frozen reader studies: generate, verify, progress."""


def _study_command(command_name: str) -> Callable[[Callable], Callable]:
    """`p2p study COMMAND_NAME NAME` with the common options: the frame every study sub-command shares."""

    def decorate(fn: Callable) -> Callable:
        return study.command(command_name)(click.argument("name")(_common(_domain_errors(fn))))

    return decorate


@_study_command("generate")
def study_generate(name, config_path, data_dir, database_url) -> None:
    """Pre-generate NAME's images, import its real images, and freeze it."""
    quiet_library_progress()
    from tqdm import tqdm

    desk = _open_desk(config_path, data_dir, database_url)
    st = desk.study(name)
    slots = [s for s in st.image_slots() if not s.is_real]
    bar = tqdm(total=len(slots), unit="img", desc=f"{st.id} v{st.version}")
    with _resumable(bar):
        report = desk.prepare(st, on_done=lambda job, status: bar.update(1))
    click.echo(
        f"{report.study}: made {report.made}, reused {report.reused}, real imported {report.real_imported}, "
        f"failed {len(report.failures)}"
    )
    for failure in report.failures:
        click.echo(f"FAILED {failure}", err=True)
    if report.frozen:
        click.echo(f"frozen: design {report.design_hash}\n        images {report.images_hash}")
    else:
        click.echo("not frozen: fix the failures and run again", err=True)
        sys.exit(1)


@_study_command("pack")
@click.argument("out", type=click.Path(file_okay=False))
def study_pack(name, out, config_path, data_dir, database_url) -> None:
    """Write frozen study NAME as a self-contained pack in OUT (served with no model: presenter mode)."""
    from .pack import pack_study

    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    report = pack_study(desk.app, desk.study(name), out)
    click.echo(f"{report.study}: packed {report.n_images} images ({report.n_bytes / 1e6:.1f} MB) into {report.folder}")
    click.echo(f"Serve it with: p2p serve --config {Path(report.folder) / 'config.toml'}  (no model, no torch needed)")


@_study_command("verify")
def study_verify(name, config_path, data_dir, database_url) -> None:
    """Check that NAME's design and every image are unchanged since it was frozen."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    report = desk.verify(desk.study(name))
    for problem in report.problems:
        click.echo(f"PROBLEM {problem}", err=True)
    if not report.ok:
        sys.exit(1)
    click.echo(f"{report.study}: OK, design and images unchanged")


@_study_command("status")
def study_status(name, config_path, data_dir, database_url) -> None:
    """Per-rater progress of NAME."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    df = desk.progress(desk.study(name))
    click.echo(df.to_string(index=False) if not df.empty else "no raters yet")


@main.group()
def raters() -> None:
    """Study raters and their invite links."""


def _invite_command(fn: Callable) -> Callable:
    """NAME, --study and --base-url (plus the common options), shared by the commands that print an invite link."""
    fn = _domain_errors(fn)
    fn = _common(fn)
    fn = click.option("--base-url", default="http://127.0.0.1:7860/", show_default=True,
                      help="Public address of the app.")(fn)
    fn = click.option("--study", "study_name", required=True, help="Study id (or id@vN).")(fn)
    return click.argument("name")(fn)


def _echo_invite(rater, token: str, base_url: str) -> None:
    click.echo(f"{rater.name} ({rater.public_id}) → {base_url.rstrip('/')}/?token={token}")


@raters.command("add")
@_invite_command
def raters_add(name, study_name, base_url, config_path, data_dir, database_url) -> None:
    """Create rater NAME for a study and print their personal invite link."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    _echo_invite(*desk.invite(desk.study(study_name), name), base_url)


@raters.command("reissue")
@_invite_command
def raters_reissue(name, study_name, base_url, config_path, data_dir, database_url) -> None:
    """Make a new invite link for rater NAME of a study (the old link stops working)."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    _echo_invite(*desk.reissue(desk.study(study_name), name), base_url)


@raters.command("list")
@click.option("--study", "study_name", default=None, help="Only this study.")
@_common
@_domain_errors
def raters_list(study_name, config_path, data_dir, database_url) -> None:
    """List raters (id, name, study, slot)."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    for r in desk.raters(desk.study(study_name) if study_name else None):
        click.echo(f"{r.public_id}\t{r.name}\t{r.study_key}\tslot={r.slot}")


@main.command()
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for confidence intervals.")
@click.option("--pool-live", type=float, default=None,
              help="Also fit the study's rankings together with the live arena's, the arena's pairs weighted by this "
                   "(the study's by 1): the ranking_pooled table.")
@_common
@_domain_errors
def report(name, out, bootstrap, pool_live, config_path, data_dir, database_url) -> None:
    """One self-contained HTML report (figures + tables) for study NAME ('live' for the arena)."""
    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    page, answers = desk.report(name, n_boot=bootstrap, pool_live=pool_live)
    Path(out).write_text(page, encoding="utf-8")
    click.echo(f"Wrote {out} ({answers} answers)")


@main.command("export-r")
@click.argument("name")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--tool", "tools", type=click.Choice(["mrmcaov", "rjafroc", "imrmc", "all"]), multiple=True,
              default=("all",), show_default=True,
              help="Which tool's files (repeat for several): MRMCaov long CSV + R script, RJafroc Excel (ROC; with "
                   "mark confidences also rjafroc_hrauc.xlsx, the marks' inferred ROC), iMRMC input file.")
@click.option("--question", default="realism", show_default=True, help="The score that rates each image.")
@_common
@_domain_errors
def export_r(name, outdir, tools, question, config_path, data_dir, database_url) -> None:
    """Write study NAME's reader study (real vs generated) for the R tools MRMCaov, RJafroc and iMRMC into OUTDIR."""
    from .rtools import TOOLS, export_r as write
    from .study import study_key

    desk = _open_desk(config_path, data_dir, database_url, read_only=True)
    st, df = desk.study_ratings(name)
    marks = desk.storage.marks_frame(study_key(st)) if st is not None else None
    chosen = TOOLS if "all" in tools else tuple(dict.fromkeys(tools))
    for path in write(df, outdir, chosen, question, marks=marks):
        click.echo(f"Wrote {path}")


@main.command()
@click.argument("name")
@click.option("--encoder", "encoder_names", multiple=True, required=True,
              help="Image encoder (repeatable): inception, dinov2, rad-dino, clip, biomedclip, tiny-dinov2, tiny-clip, "
                   "or timm:<model>, open_clip:<model>, hf:<hub id or folder>.")
@click.option("--reference", type=click.Path(), default=None,
              help="Folder of real images to compare against. Default: the study's real images.")
@click.option("--train", type=click.Path(), default=None,
              help="Folder of training images: flags generated images that are likely copies (memorisation).")
@click.option("--bootstrap", default=200, show_default=True, help="Bootstrap resamples for the intervals.")
@click.option("--copy-percentile", default=1.0, show_default=True,
              help="Copy threshold: this percentile of the training images' own nearest-neighbour distances.")
@click.option("--device", default=None, help="torch device (default: cuda when there is one, else cpu).")
@_common
@_domain_errors
def metrics(name, encoder_names, reference, train, bootstrap, copy_percentile, device, config_path, data_dir,
            database_url) -> None:
    """Automatic metrics for study NAME ('live' for the arena) per encoder: Fréchet distance, KID, RBF MMD,
    precision/recall/density/coverage per model, per-image nearest-real distance and prompt alignment, and with
    --train the memorisation check. Writes tables that `p2p report`, the admin page and `p2p export` read."""
    from .metrics import MetricsError
    from .metrics_run import MetricsInputError, compute, folder_images, study_images, write_tables
    from .study import study_key

    from generators.encoders import EncoderError, FeatureCache, encoder_spec

    try:
        specs = [encoder_spec(n) for n in encoder_names]  # a typo fails before any work
        desk = _open_desk(config_path, data_dir, database_url, read_only=True)
        app = desk.app
        st = None if name == "live" else desk.study(name)
        key = "live" if st is None else study_key(st)
        gen, real = study_images(app, st)
        if reference:
            real = folder_images(reference, "reference")
        elif len(real) < 2:
            raise MetricsInputError(f"{key} has {len(real)} real image(s) to compare against: give --reference DIR "
                                    "with a folder of real images")
        train_refs = folder_images(train, "training") if train else None
        ratings = app.storage.ratings_frame(key)
        quiet_library_progress()
        from tqdm import tqdm

        from generators.encoders import load_encoder

        total = len(gen) + len(real) + len(train_refs or ())
        for spec in specs:
            enc = load_encoder(spec, cache_dir=app.config.model_cache_dir, device=device)
            cache = FeatureCache(app.config.data_dir / "metrics" / "features", spec)
            bar = tqdm(total=total, unit="img", desc=f"{spec.name} features")
            with _resumable(bar):
                result = compute(enc, cache, gen, real, train_refs, n_boot=bootstrap, copy_percentile=copy_percentile,
                                 progress=bar.update)
            folder = write_tables(result, app.config.data_dir, key, {"reference": reference or "study real images",
                                                                      "train": train or ""})
            click.echo(f"{spec.name}: {len(gen)} generated vs {len(real)} real images -> {folder}")
            for note in result.notes:
                click.echo(f"  note: {note}")
            if "copy_flag" in result.per_image:
                click.echo(f"  likely copies: {int(result.per_image['copy_flag'].sum())} of {len(gen)} "
                           f"(thresholds: features {result.meta['copy_threshold']:.4g}, "
                           f"pixels {result.meta['pixel_threshold']:.4g})")
    except (EncoderError, MetricsError, MetricsInputError) as exc:
        raise click.ClickException(str(exc)) from None
    if ratings.empty:
        click.echo(f"No ratings yet for {key}: the metrics are written; the agreement with the clinicians appears in "
                   "`p2p report` once raters have answered (no need to run this again).")


@main.command()
def settings() -> None:
    """List every config setting with its default and meaning."""
    from .config import SETTINGS

    for s in SETTINGS:
        env = f" (env {s.env})" if s.env else ""
        click.echo(f"{s.name} = {s.default!r}{env}\n    {s.help}")


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected whole numbers separated by commas, e.g. 3,5,8; got {value!r}") from None
    if not out:
        raise click.BadParameter("expected at least one number")
    return out


@main.command()
@click.option("--design", type=click.Choice(["rating", "forced_choice", "ranking"]), default="rating",
              show_default=True,
              help="rating: two models scored side by side (power to detect a score difference); forced_choice: "
                   "'which one is real?' (power to beat chance); ranking: every screen ranks all models (power to "
                   "tell the best model from the next).")
@click.option("--models", default=2, show_default=True, help="Generated models per screen (ranking: models ranked).")
@click.option("--raters", default="3,5,8", show_default=True, callback=_int_list, help="Rater counts to try.")
@click.option("--items", default="20,40,80", show_default=True, callback=_int_list, help="Item counts to try.")
@click.option("--overlap", type=int, default=None, help="Raters per item (default: every rater sees every item).")
@click.option("--effect", type=float, default=None,
              help="Expected effect: score difference between two models (rating, default 0.5), accuracy above "
                   "chance (forced_choice, default 0.15) or the best model's log-strength above the others (ranking, "
                   "default 0.5). With --pilot: the pilot's estimate unless given.")
@click.option("--noise", type=float, default=None,
              help="Score noise SD (rating, default 1.0), between-rater SD of accuracy on the logit scale "
                   "(forced_choice, default 0.5) or of the models' log-strengths (ranking, default 0.3).")
@click.option("--pilot", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A pilot study's long CSV export: design, models, noise and effect are estimated from it.")
@click.option("--sims", default=200, show_default=True, help="Simulated studies per grid cell.")
@click.option("--anticipated", default=None, metavar="SPEC",
              help="Plan without a pilot or simulation: Obuchowski-Rockette closed-form cases per --raters count, e.g. "
                   "'auc=0.75,effect=0.05,reader_range=0.1,within_range=0.05' (also r1, r2, r3, rb, ratio, alpha, "
                   "power, icc, cluster_size, endpoint, ddf=or|hillis).")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same table).")
@click.option("--out", type=click.Path(dir_okay=False), default="plan.html", show_default=True,
              help="HTML page with the figure and the table.")
def plan(design, models, raters, items, overlap, effect, noise, pilot, sims, anticipated, seed, out) -> None:
    """Simulate a study design for a grid of raters x items: mean CI width and power (no database, no models)."""
    from .export import read_long_csv
    from .plan import plan_html, plan_study, sizing_report

    if anticipated:  # no pilot: the closed-form reader-study sizing (p2p_app.plan.or_sample_size)
        try:
            return click.echo(sizing_report(anticipated, raters))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        pilot_df = read_long_csv(pilot) if pilot else None
        table = plan_study(raters, items, design=design, models=models, overlap=overlap, effect=effect, noise=noise,
                           pilot=pilot_df, sims=sims, seed=seed)  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    Path(out).write_text(plan_html(table), encoding="utf-8")
    shown = table.loc[:, ["raters", "items", "overlap", "mean_ci_width", "power"]]
    first = table.iloc[0]
    click.echo(f"design {first['design']}, true effect {first['effect']:.3g}, {sims} simulations per cell")
    click.echo(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    click.echo(f"Wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
