"""The report's section "Do the metrics agree with the clinicians?" (and the admin page's table): per-encoder
metric tables, the agreement per image with its intervals, the best-tracking encoder, model rankings, a scatter of
per-image human score vs metric, and the flagged near-copies shown side by side with their training image.
Admin / report only: nothing here is ever on a rater's screen."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics_run import Agreement, LoadedMetrics

HEADING = "Do the metrics agree with the clinicians?"
MAX_COPY_PAIRS = 24
THUMB = 160
PLOTLY_MARK = "plotly.js v"


def metric_table(loaded: LoadedMetrics) -> pd.DataFrame:
    """One row per (encoder, model): each metric as ``value [low, high]``."""
    pm = loaded.per_model
    if pm.empty:
        return pd.DataFrame()
    cell = pm.apply(lambda r: f"{r['value']:.4g} [{r['ci_low']:.4g}, {r['ci_high']:.4g}]", axis=1)
    t = pm.assign(cell=cell).pivot_table(index=["encoder", "model"], columns="metric", values="cell", aggfunc="first")
    order = [m for m in ("frechet", "kid", "mmd_rbf", "precision", "recall", "density", "coverage", "alignment",
                         "copy_share") if m in t.columns]
    return t[order].reset_index()


def scatter(agreement: Agreement) -> go.Figure | None:
    sc = agreement.scatter
    if sc.empty:
        return None
    pairs = list(dict.fromkeys(zip(sc["question"], sc["metric"])))
    encoders = list(dict.fromkeys(sc["encoder"]))
    fig = make_subplots(rows=len(pairs), cols=len(encoders), shared_yaxes=False,
                        subplot_titles=[f"{e}: {q} vs {m}" for q, m in pairs for e in encoders])
    models = sorted(set(sc["model"].dropna()))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for i, (q, m) in enumerate(pairs, start=1):
        for j, e in enumerate(encoders, start=1):
            d = sc[(sc["question"] == q) & (sc["metric"] == m) & (sc["encoder"] == e)]
            for k, model in enumerate(models):
                dm = d[d["model"] == model]
                fig.add_trace(go.Scatter(x=dm["value"], y=dm["score"], mode="markers", name=model, legendgroup=model,
                                         showlegend=(i == 1 and j == 1), marker={"color": palette[k % len(palette)]},
                                         text=dm["image_id"]), row=i, col=j)
            fig.update_xaxes(title_text=m, row=i, col=j)
            fig.update_yaxes(title_text=f"mean {q}", row=i, col=j)
    fig.update_layout(height=320 * len(pairs) + 60, title="Per image: clinicians' mean score vs metric")
    return fig


def _thumb(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except OSError:
        return f'<span class="nc">missing: {html.escape(Path(path).name)}</span>'
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def copies_html(copies: pd.DataFrame) -> str:
    if copies.empty:
        return "<p>No generated image was closer to a training image than the calibrated threshold.</p>"
    parts = ['<table class="copies"><tr><th>generated</th><th>nearest training image</th><th>details</th></tr>']
    for _, r in copies.head(MAX_COPY_PAIRS).iterrows():
        realism = "not rated" if pd.isna(r.get("realism")) else f"{r['realism']:.2f}"
        parts.append(
            f"<tr><td>{_thumb(r['path'])}</td><td>{_thumb(r['train_nn_path'])}</td><td>"
            f"model {html.escape(str(r['model']))}<br>encoder {html.escape(str(r['encoder']))}<br>"
            f"flagged by {html.escape(str(r.get('flagged_by', '')))}<br>"
            f"feature distance {r['train_nn_distance']:.4g} (threshold {r['copy_threshold']:.4g})<br>"
            f"pixel similarity {r['pixel_similarity']:.3f}<br>mean realism {realism}<br>"
            f"{html.escape(Path(str(r['train_nn_path'])).name)}</td></tr>")
    parts.append("</table>")
    if len(copies) > MAX_COPY_PAIRS:
        parts.append(f"<p>… and {len(copies) - MAX_COPY_PAIRS} more (see the per-image table).</p>")
    return "".join(parts)


def notes(loaded: LoadedMetrics, agreement: Agreement) -> list[str]:
    n_img = int(agreement.table["n_images"].max()) if not agreement.table.empty else 0
    out = [
        f"Encoders: {', '.join(loaded.encoders)}. Set metrics compare each model's generated images with the real "
        f"reference images ({', '.join(sorted({str(m.get('n_reference')) for m in loaded.meta}))} images); "
        "intervals are 95 % bootstrap intervals over images (both sets resampled).",
        "Agreement is per image, not per model: each rated generated image's mean clinician score against its "
        f"metric ({n_img} images at most). Spearman and Kendall with 95 % intervals from a two-level bootstrap "
        "(images, then raters within each image); every encoder sees the same replicates, so the lead of the "
        "best encoder over the runner-up has its own interval.",
        "Nearest-real distance should fall as realism rises (a negative ρ is agreement); alignment should rise "
        "with the clinicians' alignment score.",
        "What it cannot show: a correlation over these images says nothing about images unlike them; with few "
        "models the model ranking (n = number of models) is only descriptive; tiny demo encoders have random "
        "weights and their numbers mean nothing.",
    ]
    if any(m.get("n_train") for m in loaded.meta):
        pct = sorted({m.get("copy_percentile") for m in loaded.meta if m.get("n_train")})
        out.append(f"Memorisation: an image is flagged when its nearest training image is closer than the {pct[0]} "
                   "th percentile of the training images' own nearest-neighbour distances, so about that share of "
                   "images that are not copies is flagged by chance. A flag is a pair to look at, not a verdict.")
    for m in loaded.meta:
        out.extend(f"{m['encoder']}: {n}" for n in m.get("notes", []))
    return out


def section_html(loaded: LoadedMetrics, agreement: Agreement, include_plotlyjs: bool, table_html) -> str:
    """The section as HTML; ``table_html(name, frame)`` renders a table as the rest of the report does."""
    parts = [f"<section><h2>{html.escape(HEADING)}</h2>",
             '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes(loaded, agreement)) + "</ul>"]
    fig = scatter(agreement)
    if fig is not None:
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id="fig-metrics_agreement",
                                 config={"displaylogo": False, "responsive": True}))
    else:
        parts.append('<p class="nc">No agreement yet: no rated generated images with metrics (rate, then report).</p>')
    parts.append(table_html("metrics_agreement", agreement.table))
    parts.append(table_html("metrics_best_encoder", agreement.best))
    parts.append(table_html("metrics_per_model", metric_table(loaded)))
    parts.append(table_html("metrics_model_ranking", agreement.ranking))
    if "copy_flag" in loaded.per_image.columns:
        parts.append("<h3>Likely near-copies of training images</h3>" + copies_html(agreement.copies))
    parts.append("</section>")
    return "\n".join(parts)
