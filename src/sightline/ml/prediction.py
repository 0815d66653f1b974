"""From pixels to a decision without torch: the model's input, probabilities, the operating point.

Shared by training and evaluation; evaluation must not pay for importing torch to use them.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from sightline_common.imaging import channels, normalise
from sightline_common.manifest import PreprocessSpec


def model_inputs(images: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.float32]:
    """Resized uint8 images to the model's input, through the serving path's ``normalise``."""
    return (
        np.stack([normalise(im, spec) for im in images])
        if len(images)
        else np.zeros((0, channels(spec), spec.height, spec.width), np.float32)
    )


def sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-z))


def choose_threshold(
    probs: NDArray[np.float64], labels: NDArray[np.int64], target_sensitivity: float
) -> tuple[float, float, float]:
    """Highest threshold whose sensitivity on these labels reaches the target.

    Returns (threshold, sensitivity, specificity) at that threshold; a study is positive
    when its calibrated probability is >= the threshold.
    """
    pos = np.sort(probs[labels == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive cases to set a sensitivity threshold on")
    k = min(len(pos), math.ceil(target_sensitivity * len(pos)))
    threshold = float(pos[k - 1])
    sens = float((probs[labels == 1] >= threshold).mean())
    spec = float((probs[labels == 0] < threshold).mean()) if (labels == 0).any() else float("nan")
    return threshold, sens, spec
