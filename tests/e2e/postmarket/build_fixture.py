"""Build the post-market simulation's images: HAM10000 test-split lesions a hospital would send.

Run from the repository root with the dataset present (``../shared/datasets/ham10000`` or
``SIGHTLINE_DATASET``)::

    python -m tests.e2e.postmarket.build_fixture

It writes ``images/<ISIC id>.jpg`` (the dataset's bytes, unchanged) and ``cases.csv`` here:

- ``held_in``: 70 benign (nv, df) and 30 malignant (mel, bcc, akiec) further lesions drawn at
  random from the test split, one image per lesion: a hospital like the training sites.
- ``missed``: 24 malignant test-split lesions, 12 of them scored below the shipped
  threshold by the served model offline: a site where the model under-calls malignancy (the
  failure issue 16 measured on external images), chosen so that its real-world sensitivity
  falls visibly below the model card's claim.

Benign lesions other than nevi and dermatofibromas are left out: the outcome code table has no
code for them yet. Every case carries the confirmed diagnosis as the outcome code a pathology
interface would post (SNOMED CT or ICD-O-3 from the gateway's code table).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sightline_common.imaging import resize
from sightline_common.manifest import load_manifest

from sightline.ml.data import dataset_root, decode_rgb
from sightline.ml.inference import onnx_session
from sightline.ml.prediction import model_inputs, sigmoid

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
#: dx -> (code system, code) in services/gateway/src/sightline_gateway/resources/outcome_codes.json.
CODES = {
    "mel": ("snomed", "372244006"),
    "bcc": ("snomed", "254701007"),
    "akiec": ("snomed", "254651007"),
    "nv": ("snomed", "400096001"),
    "df": ("icdo3", "8832/0"),
}
MALIGNANT = ("mel", "bcc", "akiec")
SEED = 20261201


def offline_probability(root: Path, rows: pd.DataFrame) -> np.ndarray:
    """The served model's calibrated probability for each row (ONNX, the manifest's temperature)."""
    manifest = load_manifest(REPO / "model_repository", "derm-cnn")
    session = onnx_session(REPO / "model_repository", manifest)
    images = np.stack([resize(decode_rgb(root / p), manifest.preprocessing) for p in rows["image"]])
    logits = session.run(None, {session.get_inputs()[0].name: model_inputs(images, manifest.preprocessing)})[
        0
    ]
    return sigmoid(logits[:, 0].astype(np.float64) / manifest.temperature)


def main() -> None:
    root = dataset_root()
    meta = pd.read_csv(root / "metadata.csv")
    test = meta[(meta["split"] == "test") & meta["dx"].isin(CODES)].drop_duplicates("lesion_id")
    rng = np.random.default_rng(SEED)
    benign = test[~test["dx"].isin(MALIGNANT)]
    malignant = test[test["dx"].isin(MALIGNANT)].copy()
    manifest = load_manifest(REPO / "model_repository", "derm-cnn")
    malignant["probability"] = offline_probability(root, malignant)
    under = malignant[malignant["probability"] < manifest.threshold]
    over = malignant[malignant["probability"] >= manifest.threshold]
    missed = pd.concat(
        [
            under.iloc[rng.choice(len(under), 12, replace=False)],
            over.iloc[rng.choice(len(over), 12, replace=False)],
        ]
    )
    rest = malignant[~malignant["lesion_id"].isin(missed["lesion_id"])]
    held_in = pd.concat(
        [
            benign.iloc[rng.choice(len(benign), 70, replace=False)],
            rest.iloc[rng.choice(len(rest), 30, replace=False)],
        ]
    )
    print(f"test-split malignant lesions: {len(malignant)}, under the threshold offline: {len(under)}")

    images = HERE / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    with (HERE / "cases.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "stream",
                "image_id",
                "dx",
                "malignant",
                "sex",
                "age",
                "localization",
                "site",
                "code_system",
                "code",
            ]
        )
        for stream, rows in (("held_in", held_in), ("missed", missed)):
            for row in rows.sort_values("image_id").itertuples():
                shutil.copyfile(root / row.image, images / f"{row.image_id}.jpg")
                system, code = CODES[row.dx]
                age = "" if pd.isna(row.age) else int(row.age)
                out.writerow(
                    [
                        stream,
                        row.image_id,
                        row.dx,
                        int(row.dx in MALIGNANT),
                        row.sex,
                        age,
                        row.localization,
                        row.site,
                        system,
                        code,
                    ]
                )
    print(f"wrote {len(held_in) + len(missed)} cases to {HERE / 'cases.csv'}")


if __name__ == "__main__":
    main()
