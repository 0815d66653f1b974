"""MODEL_CARD.md from the manifest and the evaluation output (Mitchell et al. 2019 sections)."""

from __future__ import annotations

LICENCE = (
    "CC BY-NC-SA 4.0: the weights are derived from HAM10000 (CC BY-NC-SA 4.0) and carry its terms "
    "(attribution, non-commercial, share-alike). The Sightline code is Apache-2.0."
)

INTENDED_USE = (
    "Assistive triage of dermoscopic images of pigmented skin lesions: a calibrated probability that the "
    "lesion is malignant (melanoma, basal cell carcinoma, actinic keratosis / intraepithelial carcinoma) "
    "for a clinician to review. Research and demonstration only: not a medical device, not for diagnosis, "
    "not for use without clinician review, not for non-commercial-licence-incompatible use."
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
