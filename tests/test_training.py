"""Calibration of a trained model on its validation speakers."""

import numpy as np
import pytest

from speakergender import calibration


def test_calibration_recovers_temperature_and_bias():
    # Labels drawn from sigmoid(z / 2 + 1), balanced by the fit's class weights: a large sample
    # gives back T = 2 and b = 1 (balanced classes, so the weights change nothing).
    rng = np.random.default_rng(0)
    logits = rng.normal(-2.0, 4.0, 200_000)
    labels = (rng.random(logits.size) < 1 / (1 + np.exp(-(logits / 2.0 + 1.0)))).astype(int)
    logits, labels = _balanced(logits, labels)
    temperature, bias = calibration.fit_calibration(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    assert bias == pytest.approx(1.0, abs=0.1)


def test_bias_moves_the_decision_to_where_unheard_speakers_fall():
    # Ranked right but shifted: every clip scores 2 below where it should, so at 0 most female
    # clips are called male. The fitted bias brings balanced accuracy back.
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 500)
    logits = np.where(labels == 1, 1.0, -3.0) + rng.normal(0, 0.7, labels.size) - 1.0
    temperature, bias = calibration.fit_calibration(logits, labels)
    before = _balanced_accuracy(logits > 0, labels)
    after = _balanced_accuracy(logits / temperature + bias > 0, labels)
    assert before < 0.8 and after > 0.95
    assert bias > 0


def test_nothing_to_fit_leaves_logits_alone():
    assert calibration.fit_calibration(np.array([]), np.array([])) == (1.0, 0.0)
    assert calibration.fit_calibration(np.array([1.0, 2.0]), np.array([1, 1])) == (1.0, 0.0)
    assert calibration.fit_calibration(np.array([np.nan, 2.0]), np.array([0, 1])) == (1.0, 0.0)


def test_a_decision_far_from_zero_is_reached():
    # Every logit negative, females less so: the decision point belongs between -4 and -1,
    # however far that is from 0 once divided by the temperature.
    labels = np.repeat([0, 1], 50)
    logits = np.where(labels == 1, -1.0, -4.0) + np.linspace(-0.3, 0.3, labels.size)
    temperature, bias = calibration.fit_calibration(logits, labels)
    assert -4.0 < -bias * temperature < -1.0
    assert _balanced_accuracy(logits / temperature + bias > 0, labels) == 1.0


def test_separable_validation_gives_confident_but_not_certain_probabilities():
    # 100 clips a gender, separated by a wide margin: Platt's targets are 101/102 and 1/102.
    labels = np.repeat([0, 1], 100)
    logits = np.where(labels == 1, 40.0, -40.0) + np.linspace(-5, 5, labels.size)
    temperature, bias = calibration.fit_calibration(logits, labels)
    probability = 1 / (1 + np.exp(-(logits / temperature + bias)))
    assert 0.97 < probability[labels == 1].mean() < 0.999
    assert 0.001 < probability[labels == 0].mean() < 0.03
    assert temperature > 1.0


def _balanced(logits, labels):
    count = min(np.sum(labels == 0), np.sum(labels == 1))
    keep = np.concatenate([np.flatnonzero(labels == label)[:count] for label in (0, 1)])
    return logits[keep], labels[keep]


def _balanced_accuracy(called_female, labels):
    return (np.mean(called_female[labels == 1]) + np.mean(~called_female[labels == 0])) / 2
