"""MODEL_CARD.md from the manifest and the evaluation output (Mitchell et al. 2019 sections)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sightline_common.manifest import ModelManifest, load_manifest

from sightline.ml.loso_results import loso_entries
from sightline.ml.metrics import metrics_table

LICENCE = (
    "CC BY-NC-SA 4.0: the weights are derived from HAM10000 (CC BY-NC-SA 4.0) and carry its terms "
    "(attribution, non-commercial, share-alike). The Sightline code is Apache-2.0."
)

INTENDED_USE = (
    "Assistive triage of dermoscopic images of pigmented skin lesions: a calibrated probability that the "
    "lesion is malignant (melanoma, basal cell carcinoma, actinic keratosis / intraepithelial carcinoma) "
    "for a clinician to review. Research and demonstration only: not a medical device, not for diagnosis, "
    "not for use without clinician review, not for commercial use (CC BY-NC-SA 4.0)."
)

LIMITATIONS = [
    "Trained from scratch on a 2-core CPU in minutes at low resolution; accuracy is below published "
    "HAM10000 models that use pretrained networks and full-resolution images.",
    "Site is a strong shortcut: the malignant share runs from about 40% (rosendahl) to under 1% "
    "(vidir_molemax); the model may learn acquisition device cues rather than lesion morphology.",
    "Label quality differs by site: rosendahl and vienna_dias are all histopathology; most vidir_molemax "
    "nevi are labelled by follow-up only.",
    "Age is confounded with the label (malignant cases are older) and coarse (5-year steps).",
    "No patient id exists, so one patient's lesions can fall into different splits.",
    "Low resolution (200x150, third-party JPEG compression) caps attainable accuracy.",
    "Known dermoscopy shortcuts (dark vignetting, hairs, rulers, ink marks, gel bubbles) may be used by "
    "the model; check Grad-CAM maps.",
    "Austrian and Australian patients, mostly fair skin; no skin-type field, so no audit by skin tone "
    "was possible. Do not assume performance on darker skin.",
    "Dermoscopy only: clinical (non-dermoscopic) photographs and other body imaging are out of scope.",
]

DATASET_CITATION = (
    'Tschandl P., Rosendahl C., Kittler H. "The HAM10000 dataset, a large collection of multi-source '
    'dermatoscopic images of common pigmented skin lesions." Scientific Data 5, 180161 (2018). '
    "doi:10.7910/DVN/DBW86T"
)


def _v(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else f"{m['value']:.3f}"


def _counts_table(counts: dict[str, dict[str, int]]) -> str:
    rows = "".join(f"| {k} | {v['benign']} | {v['malignant']} |\n" for k, v in counts.items())
    return "| group | benign | malignant |\n|---|---|---|\n" + rows


def _findings(evaluation: dict[str, Any]) -> list[str]:
    """Key findings in words: within-site vs pooled AUROC (the site shortcut) and external validation."""
    overall = evaluation["overall"]["auroc"]["value"]
    sites = evaluation["by_attribute"].get("site", {})
    within = {s: v["auroc"]["value"] for s, v in sites.items() if v["positives"] >= 50}
    lines = ["Key findings:", ""]
    if within and overall is not None:
        listed = ", ".join(f"{s} {a:.3f}" for s, a in within.items() if a is not None)
        lines.append(
            f"- Pooled AUROC ({overall:.3f}) exceeds AUROC within each site with at least 50 malignant "
            f"images ({listed}): part of the pooled discrimination comes from site (malignant share "
            "by site), "
            "the shortcut the dataset README warns about."
        )
    for ext in loso_entries(evaluation):
        site = ext["held_out_site"]
        held = ext["held_out_site_all_splits"]["auroc"]["value"]
        others = next(v for k, v in ext.items() if k.startswith("other_sites_"))["auroc"]["value"]
        lines.append(
            f"- Trained without {site}, the recipe reaches AUROC {held:.3f} on {site} against "
            f"{others:.3f} on the "
            f"sites it was trained on: it does not transfer to an unseen site without local validation."
        )
    flagged = evaluation.get("flagged_gaps", [])
    if flagged:
        listed = "; ".join(f"{f['attribute']} {f['metric']} {f['gap']:.3f}" for f in flagged[:5])
        lines.append(f"- Largest flagged subgroup gaps: {listed}.")
    return [*lines, ""]


def render_model_card(manifest: ModelManifest, evaluation: dict[str, Any]) -> str:
    """MODEL_CARD.md text: the sections of Mitchell et al. (2019), filled from manifest and evaluation.

    A model evaluated without subgroup columns (a dataset that records no sex, age or site) gets
    the card that says so, with no per-group sections to suggest an analysis that was not made.
    """
    if not evaluation.get("by_attribute") and evaluation.get("subgroup_columns") == []:
        return render_card_without_subgroups(manifest, evaluation)
    td = manifest.training_data
    cfg = td.get("config", {})
    spec = manifest.preprocessing
    overall = evaluation["overall"]
    val = manifest.metrics.get("validation", {})
    split = evaluation["split"]
    flagged = evaluation.get("flagged_gaps", [])
    gap_lines = []
    for attribute, per in evaluation["gaps"].items():
        for metric, g in per.items():
            if g.get("gap") is not None:
                flag = " **flagged**" if g["flagged"] else ""
                gap_lines.append(
                    f"| {attribute} | {metric} | {g['gap']:.3f} | {g['best']} / {g['worst']} | "
                    f"{g['tolerance']} |{flag}"
                )
    tolerances = ", ".join(f"{k} {v}" for k, v in evaluation["gap_rules"]["tolerance"].items())
    ext_text = "Not run."
    entries = loso_entries(evaluation)
    if entries:
        ext_text = ""
    for ext in entries:
        site = ext["held_out_site"]
        rows = {k: v for k, v in ext.items() if isinstance(v, dict) and "auroc" in v}
        ext_text += (
            f"Leave-one-site-out: the recipe trained without `{site}` "
            f"({ext.get('epochs_run', '?')} epochs run; the served model "
            f"{manifest.metrics.get('validation', {}).get('epochs_run', '?')}) and tested on all {site} "
            f"images (an external site it never saw), against the other sites' {split} split.\n\n"
            + metrics_table(rows)
            + f"\n![ROC](evaluation/roc_loso_{site}.png)\n"
        )
    missing = evaluation.get("leave_one_site_out", {}).get("missing", [])
    if missing:
        ext_text += "\nNot yet run (no held-out model): " + ", ".join(m["site"] for m in missing) + ".\n"
    placeholder_warning = "\n> **PLACEHOLDER MODEL: random weights.**\n" if manifest.placeholder else ""
    sections = [
        f"# Model card: {manifest.name} v{manifest.version}",
        placeholder_warning,
        "Generated by `sightline model-card` from `manifest.json` and `evaluation/evaluation.json`; "
        "do not edit by hand. Sections follow Mitchell et al., *Model Cards for Model Reporting* "
        "(FAT* 2019).",
        "",
        "## Model details",
        "",
        f"- Architecture: `{manifest.architecture['name']}` "
        f"{json.dumps(manifest.architecture.get('kwargs', {}))}, "
        "a small residual CNN in plain torch, trained from scratch (no pretrained weights) on a CPU; "
        "the last convolutional block is the Grad-CAM target layer.",
        f"- Input: RGB {spec.width}x{spec.height} ({spec.resize}), normalised with mean {spec.mean}, "
        f"std {spec.std}; "
        f"accepted modalities {spec.accepted_modalities}.",
        f"- Output: one logit for `{manifest.positive_label}`; calibrated probability = sigmoid(logit / "
        f"{manifest.temperature:.4f}) (temperature scaling on the validation split).",
        f"- Operating threshold: {manifest.threshold:.4f}. {manifest.threshold_rationale}",
        f"- Training: {td.get('n_train', '?')} images, up to {cfg.get('epochs', '?')} epochs "
        f"({val.get('epochs_run', '?')} run, best epoch {val.get('best_epoch', '?')} by validation "
        "AUROC), AdamW, "
        f"batch {cfg.get('batch_size', '?')}, class-weighted loss (pos_weight {td.get('pos_weight', '?')}, "
        "removed from the bias afterwards), flips, 90-degree rotations, random resized crops, colour jitter; "
        f"seed {cfg.get('seed', '?')}.",
        "- Artifacts: `1/model.onnx` (served by Triton) and `1/model.pt` from the same checkpoint; sha256 in "
        "`manifest.json`.",
        f"- Licence: {manifest.licence}",
        f"- Dataset citation: {DATASET_CITATION}",
        "",
        "## Intended use",
        "",
        manifest.intended_use,
        "",
        "Out of scope: autonomous diagnosis; non-dermoscopic photographs; lesions other than pigmented skin "
        "lesions; populations not represented in the training data (see caveats); commercial use (licence).",
        "",
        "## Factors",
        "",
        "Results are disaggregated by sex, age band (0-29, 30-44, 45-59, 60-74, 75+, unknown) and "
        "acquisition "
        "site (`vidir_modern`, `vidir_molemax`, `vienna_dias`: three Vienna device/era subsets; "
        "`rosendahl`: a "
        "Queensland skin-cancer practice). Site stands in for device and population. Skin type is "
        "not recorded, "
        "so it could not be evaluated.",
        "",
        "## Metrics",
        "",
        "AUROC and AUPRC (threshold-free ranking), sensitivity and specificity at the operating "
        "threshold, and "
        "expected calibration error (15 equal-width bins) of the calibrated probability, from "
        "scikit-learn and, "
        "per group, fairlearn's MetricFrame. 95% confidence intervals by percentile bootstrap "
        f"({evaluation['n_bootstrap']} resamples"
        + (f" of {evaluation['bootstrap_unit']}s" if "bootstrap_unit" in evaluation else "")
        + " within each group"
        + (
            f"; no interval for a group with fewer than {evaluation['min_positives_ci']} malignant cases"
            if "min_positives_ci" in evaluation
            else ""
        )
        + "). A between-group gap is flagged when it "
        f"exceeds {tolerances} and only groups with at least "
        f"{evaluation['gap_rules']['min_positives']} malignant and "
        f"{evaluation['gap_rules']['min_negatives']} "
        "benign images enter it.",
        "",
        "## Evaluation data",
        "",
        f"The fixed lesion-grouped `{split}` split of HAM10000 ({overall['n']} images, "
        f"{overall['positives']} "
        "malignant); no lesion appears in two splits. The served artifact (`model.onnx`, "
        "sha256-checked) was run "
        "through ONNX Runtime on pixels prepared by the serving path's resize and normalise.",
        "",
        "## Training data",
        "",
        f"HAM10000 `{', '.join(td.get('train_splits', []))}` split ({td.get('n_train', '?')} images; "
        "validation "
        f"{td.get('n_val', '?')}), malignant = mel, bcc, akiec; benign = nv, bkl, df, vasc.",
        "",
        _counts_table(td.get("train_by_site", {})),
        "",
        "## Quantitative analyses",
        "",
        f"Overall on `{split}`: AUROC {_v(overall['auroc'])}, AUPRC {_v(overall['auprc'])}, sensitivity "
        f"{_v(overall['sensitivity'])}, specificity {_v(overall['specificity'])}, ECE {_v(overall['ece'])} "
        f"(ECE at T = 1, after removing the class-weight prior: {evaluation.get('uncalibrated_ece')}).",
        "",
        *_findings(evaluation),
    ]
    for attribute, per in evaluation["by_attribute"].items():
        sections += [
            f"### By {attribute}",
            "",
            metrics_table(per),
            f"![ROC by {attribute}](evaluation/roc_{attribute}.png)",
            "",
        ]
    sections += [
        "### Largest subgroup gaps",
        "",
        "| attribute | metric | gap | best / worst | tolerance |",
        "|---|---|---|---|---|",
        *gap_lines,
        "",
    ]
    sections += [
        f"Flagged: {len(flagged)} gap(s) above tolerance." if flagged else "No gap above tolerance.",
        "",
    ]
    sections += [
        "### Calibration",
        "",
        "![reliability](evaluation/calibration.png)",
        "",
        "![reliability by site](evaluation/calibration_site.png)",
        "",
        "### External validation",
        "",
        ext_text,
        "",
    ]
    sections += [
        "## Ethical considerations",
        "",
        "- Assistive only: every output is preliminary until a clinician reviews it; a missed "
        "malignancy can harm "
        "a patient, hence the high-sensitivity threshold and its cost in false referrals.",
        "- The images are public and de-identified by their publishers; no patient id exists.",
        "- Performance differs by site and age band (see above); the model may under-serve groups that are "
        "rare in the data (young patients, `vienna_dias`) and populations absent from it (darker "
        "skin types).",
        "- Non-commercial, share-alike licence inherited from the data.",
        "",
        "## Caveats and recommendations",
        "",
        *[f"- {item}" for item in manifest.limitations],
        "- Per-site AUROC at `vidir_molemax` and `vienna_dias` rests on few positives: read the "
        "confidence intervals.",
        "- Re-evaluate locally (`sightline evaluate`) before any use on another population or device, and "
        "monitor drift against `reference_distribution` in the manifest.",
        "",
    ]
    return "\n".join(sections)


def render_card_without_subgroups(manifest: ModelManifest, evaluation: dict[str, Any]) -> str:
    """The model card of a model whose data has no subgroup attributes (one site, no sex or age)."""
    td = manifest.training_data
    cfg = td.get("config", {})
    aug = cfg.get("augment", {})
    spec = manifest.preprocessing
    overall = evaluation["overall"]
    val = manifest.metrics.get("validation", {})
    split = evaluation["split"]
    negative, positive = manifest.labels[0], manifest.positive_label
    counts = td.get("train_counts", {})
    channels = "one channel (grey)" if spec.colour == "MONOCHROME" else "RGB"
    augmentation = ", ".join(
        part
        for part, on in (
            ("flips", aug.get("flips")),
            ("90-degree rotations", aug.get("rot90")),
            (f"rotations within +-{aug.get('rotate_degrees')} degrees", aug.get("rotate_degrees")),
            (f"random resized crops (area >= {aug.get('crop_scale_min')})", aug.get("crop_scale_min")),
            ("brightness/contrast jitter", aug.get("brightness") or aug.get("contrast")),
        )
        if on
    )
    placeholder_warning = "\n> **PLACEHOLDER MODEL: random weights.**\n" if manifest.placeholder else ""
    sections = [
        f"# Model card: {manifest.name} v{manifest.version}",
        placeholder_warning,
        "Generated by `sightline model-card` from `manifest.json` and `evaluation/evaluation.json`; "
        "do not edit by hand. Sections follow Mitchell et al., *Model Cards for Model Reporting* "
        "(FAT* 2019).",
        "",
        "## Model details",
        "",
        f"- Architecture: `{manifest.architecture['name']}` "
        f"{json.dumps(manifest.architecture.get('kwargs', {}))}, a small residual CNN in plain torch, "
        "trained from scratch (no pretrained weights) on a CPU; Grad-CAM at "
        f"`{manifest.architecture.get('target_layer', 'features')}`.",
        f"- Input: {channels} {spec.width}x{spec.height} ({spec.resize}), normalised with mean "
        f"{spec.mean}, std {spec.std}; accepted modalities {spec.accepted_modalities}, body parts "
        f"{spec.accepted_body_parts or 'any'}, photometric interpretations "
        f"{spec.accepted_photometric_interpretations or 'any'}. DICOM pixels pass the modality LUT, "
        "then the VOI LUT or window, and MONOCHROME1 is inverted, before resizing.",
        f"- Output: one logit for `{positive}`; calibrated probability = sigmoid(logit / "
        f"{manifest.temperature:.4f}) (temperature scaling on the validation split).",
        f"- Operating threshold: {manifest.threshold:.4f}. {manifest.threshold_rationale}",
        f"- Training: {td.get('n_train', '?')} images, up to {cfg.get('epochs', '?')} epochs within a "
        f"{cfg.get('max_wall_minutes') or cfg.get('max_minutes') or '?'}-minute budget "
        f"({val.get('epochs_run', '?')} run, best epoch {val.get('best_epoch', '?')} by validation AUROC), "
        f"AdamW, batch {cfg.get('batch_size', '?')}, class-weighted loss (pos_weight "
        f"{td.get('pos_weight', '?')}, removed from the bias afterwards), "
        f"{augmentation or 'no augmentation'}; "
        f"seed {cfg.get('seed', '?')}.",
        "- Artifacts: `1/model.onnx` (served by Triton) and `1/model.pt` from the same checkpoint; sha256 in "
        "`manifest.json`.",
        f"- Licence: {manifest.licence}",
        f"- Dataset: {td.get('dataset', '?')} ({td.get('licence', '?')}).",
        "",
        "## Intended use",
        "",
        manifest.intended_use,
        "",
        "Out of scope: autonomous diagnosis; populations, ages, hospitals and devices not represented in "
        "the training data (see caveats); findings other than the one predicted.",
        "",
        "## Factors",
        "",
        "**No subgroup analysis was possible.** The dataset records no sex, age or acquisition site per "
        "image and comes from one hospital: results are reported overall only, and nothing here says how "
        "the model performs for any subgroup (sex, age within 1-5 years, device, exposure).",
        "",
        "## Metrics",
        "",
        "AUROC and AUPRC (threshold-free ranking), sensitivity and specificity at the operating threshold, "
        "and expected calibration error (15 equal-width bins) of the calibrated probability, from "
        "scikit-learn. 95% confidence intervals by percentile bootstrap "
        f"({evaluation['n_bootstrap']} resamples of {evaluation.get('bootstrap_unit', 'image')}s: every "
        "image of a resampled patient is taken together, as a patient's images are not independent).",
        "",
        "## Evaluation data",
        "",
        f"The fixed patient-grouped `{split}` split ({overall['n']} images, {overall['positives']} "
        f"{positive}); no patient appears in two splits. The served artifact (`model.onnx`, "
        "sha256-checked) was run through ONNX Runtime on pixels prepared by the serving path's resize "
        "and normalise.",
        "",
        "## Training data",
        "",
        f"Task: {td.get('task', '?')}. Split: {td.get('split', '?')}. "
        f"`{', '.join(td.get('train_splits', []))}` split: {td.get('n_train', '?')} "
        f"images ({counts.get(negative, '?')} {negative}, {counts.get(positive, '?')} {positive}); "
        f"validation {td.get('n_val', '?')} images.",
        "",
        "## Quantitative analyses",
        "",
        metrics_table({"all": overall}, positive),
        f"Overall on `{split}`: AUROC {_v(overall['auroc'])}, AUPRC {_v(overall['auprc'])}, sensitivity "
        f"{_v(overall['sensitivity'])}, specificity {_v(overall['specificity'])}, ECE {_v(overall['ece'])} "
        f"(ECE at T = 1, after removing the class-weight prior: {evaluation.get('uncalibrated_ece')}). "
        f"On validation: AUROC {val.get('auroc', '?')}, sensitivity {val.get('sensitivity', '?')}, "
        f"specificity {val.get('specificity', '?')}, ECE {val.get('ece', '?')}.",
        "",
        "![ROC](evaluation/roc.png)",
        "",
        "### Calibration",
        "",
        "![reliability](evaluation/calibration.png)",
        "",
        "### External validation",
        "",
        "Not run: no second hospital's data. The test split comes from the original dataset's test "
        "folder (other patients, the same hospital); temperature and threshold were fitted on "
        "validation images from the original training folder, so a shift between the folders shows "
        "as test calibration and specificity differing from validation.",
        "",
        "## Ethical considerations",
        "",
        f"- Assistive only: every output is preliminary until a clinician reviews it; a missed {positive} "
        "can harm a child, hence the high-sensitivity threshold and its cost in false positives.",
        "- The images are public and de-identified by their publishers.",
        "- Children from one hospital in one country: the model may fail silently on other populations; "
        "nothing here measures it.",
        "",
        "## Caveats and recommendations",
        "",
        *[f"- {item}" for item in manifest.limitations],
        "- Re-evaluate locally (`sightline evaluate`) before any use on another population or device, and "
        "monitor drift against `reference_distribution` in the manifest.",
        "",
    ]
    return "\n".join(sections)


def write_model_card(
    repository: Path, name: str, *, evaluation: Path | None = None, out: Path | None = None
) -> Path:
    """Write MODEL_CARD.md beside the manifest (or to ``out``)."""
    manifest = load_manifest(repository, name)
    evaluation = evaluation or repository / name / "evaluation" / "evaluation.json"
    result = json.loads(evaluation.read_text())
    out = out or repository / name / "MODEL_CARD.md"
    out.write_text(render_model_card(manifest, result))
    return out
