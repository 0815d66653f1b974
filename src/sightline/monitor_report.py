"""The monthly real-world performance report: HTML with embedded plots, from :class:`Case` rows.

Sensitivity/specificity over rolling windows with Wilson 95% bands, the calibration curve, and
tables per model version x tenant, per site and per subgroup (sex, age band), each estimate with
its count. Verification bias is stated: the share of results with a confirmed outcome, and the
estimate again with clinician verdicts standing in for the unconfirmed.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from sightline_gateway.core.performance import (
    Case,
    Estimate,
    Performance,
    group_by,
    performance,
    rolling,
)

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1b1f24}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #e3e6ea;
text-align:right}th:first-child,td:first-child{text-align:left}.note{background:#fff7e0;padding:.6rem .9rem;
border-left:4px solid #e0a800}.low{color:#b00020;font-weight:600}img{max-width:100%}small{color:#667}
"""

NOTE = (
    '<p class="note"><b>Verification bias.</b> Lesions the model did not refer are biopsied less often, '
    "so confirmed cases over-represent referred lesions: sensitivity tends to be overstated and "
    "specificity understated. The <i>proxy</i> columns add the unconfirmed results, taking the "
    "clinician's verdict (agree / disagree with the model) as the truth; neither column is unbiased, the "
    "truth lies between. Treat estimates over few cases (wide intervals) as unknown, not as good.</p>"
)


def fmt(est: Estimate) -> str:
    """``0.91 (0.85-0.95) 93/102``, or ``- 0/0``."""
    if est.value is None or est.low is None or est.high is None:
        return f"- <small>{est.k}/{est.n}</small>"
    return f"{est.value:.2f} <small>({est.low:.2f}-{est.high:.2f}) {est.k}/{est.n}</small>"


def _png(fig: Figure) -> str:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def over_time_plot(
    cases: Sequence[Case], start: datetime, end: datetime, width: timedelta, step: timedelta
) -> str:
    """Sensitivity and specificity per rolling window with Wilson bands (confirmed cases)."""
    windows = rolling(cases, start, end, width, step)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, colour in (("sensitivity", "#c0392b"), ("specificity", "#2c7fb8")):
        points = [(w.end, getattr(w.performance.confirmed, name)) for w in windows]
        points = [(t, e) for t, e in points if e.value is not None]
        if not points:
            continue
        xs: Any = [t for t, _ in points]  # matplotlib's stubs omit its datetime support
        ax.plot(xs, [e.value for _, e in points], marker="o", ms=3, color=colour, label=name)
        ax.fill_between(xs, [e.low for _, e in points], [e.high for _, e in points], color=colour, alpha=0.18)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("confirmed cases")
    ax.set_title(f"Rolling {width.days}-day windows, Wilson 95% bands")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.autofmt_xdate()
    return _png(fig)


def calibration_plot(perf: Performance) -> str:
    """Observed malignancy rate against mean predicted probability per score bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect")
    points = [
        (b.n, b.mean_predicted, b.observed.value, b.observed.low, b.observed.high)
        for b in perf.calibration
        if b.mean_predicted is not None
        and b.observed.value is not None
        and b.observed.low is not None
        and b.observed.high is not None
    ]
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    err = [[p[2] - p[3] for p in points], [p[4] - p[2] for p in points]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", color="#6a3d9a", capsize=3, label="observed (95% CI)")
    for n, x, y, _, _ in points:
        ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed rate (confirmed)")
    ax.set_title("Calibration")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _rows(groups: dict[tuple[str, ...], list[Case]], claim: float | None) -> str:
    out = []
    for key, members in groups.items():
        perf = performance(members)
        sens = perf.confirmed.sensitivity
        low = claim is not None and sens.high is not None and sens.high < claim
        cells = [
            *(html.escape(k) for k in key),
            str(perf.results),
            fmt(perf.verified_share),
            f'<span class="{"low" if low else ""}">{fmt(sens)}</span>',
            fmt(perf.confirmed.specificity),
            fmt(perf.confirmed.ppv),
            fmt(perf.confirmed.npv),
            fmt(perf.with_proxy.sensitivity),
            fmt(perf.with_proxy.specificity),
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out)


def table(cases: Sequence[Case], keys: Sequence[str], claim: float | None) -> str:
    """One row per group: results, verified share, the four estimates, and the verdict-proxy pair."""
    head = [
        *keys,
        "results",
        "with outcome",
        "sensitivity",
        "specificity",
        "PPV",
        "NPV",
        "sens. (proxy)",
        "spec. (proxy)",
    ]
    return (
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + _rows(group_by(cases, keys), claim)
        + "</table>"
    )


def render(
    cases: Sequence[Case],
    *,
    since: datetime,
    until: datetime,
    width: timedelta,
    step: timedelta,
    claim: float | None,
    title: str = "Sightline real-world performance",
) -> str:
    """The whole report as one self-contained HTML document."""
    overall = performance(cases)
    claim_text = f"{claim:.3f}" if claim is not None else "not stated"
    over_time = over_time_plot(cases, since, until, width, step)
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Results from {since:%Y-%m-%d} to {until:%Y-%m-%d}: <b>{overall.results}</b>; with a confirmed "
        f"outcome: <b>{fmt(overall.verified_share)}</b>. Model card sensitivity claim: <b>{claim_text}</b>. "
        "Estimates are over confirmed cases, with Wilson 95% intervals and the counts behind them.</p>",
        NOTE,
        "<h2>Sensitivity and specificity over time</h2>",
        f'<img alt="sensitivity and specificity over time" src="{over_time}">',
        "<h2>Calibration</h2>",
        f'<img alt="calibration curve" src="{calibration_plot(overall)}">',
        "<h2>By model version and tenant</h2>",
        table(cases, ("model", "version", "tenant"), claim),
        "<h2>By site</h2>",
        table(cases, ("version", "tenant", "site"), claim),
        "<h2>By subgroup</h2>",
        table(cases, ("version", "sex"), claim),
        table(cases, ("version", "age_band"), claim),
        "<p><small>Red: the whole sensitivity interval lies below the model card's claim. Sex and age band "
        "come from the de-identified image when the outcome was reported, the site from the outcome: "
        "results "
        "without an outcome count as site <i>unspecified</i>, so read a site's share with an outcome "
        "against the tenant's. "
        "Generated by <code>sightline monitor report</code>.</small></p></html>",
    ]
    return "\n".join(parts)
