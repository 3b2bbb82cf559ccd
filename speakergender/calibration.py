"""Calibration of a trained model's logits on speakers it never trained on."""

from __future__ import annotations

import math

import numpy as np


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: T and b minimising the class-balanced log loss of sigmoid(z / T + b).

    Fitted on validation speakers, whom the model never trained on: unheard voices of the
    minority gender tend to score on the majority's side of 0 while still ranking right (high
    AUC, low recall), and the bias moves the decision to where unheard speakers fall. As in
    Platt's method the targets are (n + 1) / (n + 2) and 1 / (n + 2), not 1 and 0, so a
    validation set that the model separates does not drive T to its bound and make every
    probability 0 or 1. The decision point -b T is kept within the logits seen.

    Args:
      logits: [n] uncalibrated logits (female > 0).
      labels: [n] 1 for female.

    Returns:
      (T, b) with T in [0.05, 20]; (1.0, 0.0) when there is nothing to fit (no clips, one
      gender only, or logits that are not finite).
    """
    from scipy import optimize

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(logits) == 0 or labels.min() == labels.max() or not np.all(np.isfinite(logits)):
        return 1.0, 0.0
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    females, males = labels.sum(), len(labels) - labels.sum()
    targets = np.where(labels == 1, (females + 1) / (females + 2), 1 / (males + 2))

    def loss(theta: np.ndarray) -> float:
        # theta: log T and the decision point c, in the logits' own units: z' = (z - c) / T.
        z = (logits - theta[1]) / math.exp(theta[0])
        # Cross-entropy against the targets, with log(1 + exp(-z)) and log(1 + exp(z)) stable.
        return float(np.mean(weights * (targets * np.logaddexp(0.0, -z)
                                        + (1 - targets) * np.logaddexp(0.0, z))))

    low, high = float(logits.min()), float(logits.max())
    fitted = optimize.minimize(loss, x0=np.array([0.0, np.clip(0.0, low, high)]),
                               method="L-BFGS-B",
                               bounds=[(math.log(0.05), math.log(20.0)), (low, high)])
    temperature = math.exp(fitted.x[0])
    return float(temperature), float(-fitted.x[1] / temperature)

