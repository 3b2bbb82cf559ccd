"""Grad-CAM: which layer is explained, map shapes, non-zero gradients, per-gender summaries, CLI."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import helpers
from speakergender import corpora, interpret
from speakergender.frontend import features
from speakergender.config import FrontEndParams
from speakergender.models import yamnet
from speakergender.models.backbones import feature_extractor
from speakergender.models.inputs import waveform_features
from speakergender.models.pooling import StatisticsPooling
from speakergender.models.scratch import build_scratch_cnn

FRONT_END = FrontEndParams()
FRAMES, BANDS = FRONT_END.feature_shape


@pytest.fixture(scope="module")
def classifier(trained_classifier) -> keras.Model:
    """The scratch CNN fitted to synthetic voices (tells the genders apart)."""
    return trained_classifier


@pytest.fixture(scope="module")
def unheard_table(tmp_path_factory) -> pd.DataFrame:
    """Synthetic speakers the classifier never trained on."""
    root = helpers.synthetic_corpus(tmp_path_factory, "interpret", female_speakers=2,
                                    male_speakers=2, clips_per_speaker=3, seed=21)
    return corpora.load_corpus(root).table


@pytest.fixture(scope="module")
def explained(classifier, unheard_table) -> tuple[np.ndarray, pd.DataFrame]:
    return interpret.explain_table(classifier, unheard_table, FRONT_END, batch_size=5)


def backbone_classifier() -> keras.Model:
    """YAMNet whole (random weights) with a head on its embedding (`--backbone-layer embedding`)."""
    keras.utils.set_random_seed(0)
    backbone = yamnet.build_yamnet(include_logits=False)
    inputs, features = waveform_features(FRONT_END)
    x = keras.layers.Dropout(0.3, name="head_dropout")(backbone(features))
    return keras.Model(inputs, keras.layers.Dense(1, name="logits")(x), name="yamnet_classifier")


def _waveforms(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, (batch, FRONT_END.clip_samples)).astype(np.float32)


# --- which layer ---------------------------------------------------------------------------------


def test_scratch_cnn_explains_its_last_convolution_not_the_time_pooling():
    model = build_scratch_cnn(FRONT_END)
    owner, name = interpret.last_conv_layer(model)
    assert owner is model and name == "block4_relu1"
    activation = interpret.grad_cam_model(model).outputs[0]
    # 96 x 64 after three 2 x 2 poolings; time_pool would have left one time step.
    assert tuple(activation.shape[1:]) == (12, 8, 128)


def test_nested_backbone_explains_its_last_block_and_keeps_the_head():
    model = backbone_classifier()
    owner, name = interpret.last_conv_layer(model)
    assert owner.name == "yamnet" and name == "layer14"
    explainer = interpret.grad_cam_model(model)
    inputs = _waveforms(2)
    activation, logits = explainer(inputs, training=False)
    assert activation.shape == (2, 3, 2, 1024)
    np.testing.assert_allclose(logits, model(inputs, training=False), atol=1e-5)
    finer, _ = interpret.grad_cam_model(model, "layer6")(inputs, training=False)
    assert finer.shape == (2, 12, 8, 256)
    maps = interpret.grad_cam(explainer, inputs, np.array([1, 0]),
                              interpret.feature_shape(model))
    assert maps.shape == (2, FRAMES, BANDS)


def test_backbone_cut_at_a_mid_level_block_explains_that_block():
    """The default backbone classifier: YAMNet up to layer7, statistics pooling, head."""
    keras.utils.set_random_seed(0)
    backbone = feature_extractor(yamnet.build_yamnet(include_logits=False), "layer7")
    inputs, features = waveform_features(FRONT_END)
    x = StatisticsPooling(name="statistics_pooling")(backbone(features))
    model = keras.Model(inputs, keras.layers.Dense(1, name="logits")(x))
    owner, name = interpret.last_conv_layer(model)
    assert owner is model and name == "yamnet"
    waveforms = _waveforms(2)
    activation, logits = interpret.grad_cam_model(model)(waveforms, training=False)
    assert activation.shape == (2, 6, 4, 512)
    np.testing.assert_allclose(logits, model(waveforms, training=False), atol=1e-5)


def test_unknown_layer_is_named_in_the_error():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        interpret.grad_cam_model(build_scratch_cnn(FRONT_END), "nope")


# --- the maps ------------------------------------------------------------------------------------


def test_explainer_gives_the_classifier_logits(classifier, unheard_table):
    explainer = interpret.grad_cam_model(classifier)
    waveforms = _waveforms(3, seed=1)
    _, logits = explainer(waveforms, training=False)
    np.testing.assert_allclose(logits, classifier(waveforms, training=False), atol=1e-5)


def test_maps_have_the_input_shape_and_are_scaled_to_one(explained, unheard_table):
    maps, kept = explained
    assert maps.shape == (len(unheard_table), FRAMES, BANDS)
    assert maps.dtype == np.float32
    assert sorted(kept["path"]) == sorted(unheard_table["path"])
    assert maps.min() >= 0.0
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))
    assert np.mean(np.isclose(peaks, 1.0)) >= 0.75, "most clips should have some evidence"


def test_gradients_reach_the_explained_layer(classifier, unheard_table):
    explainer = interpret.grad_cam_model(classifier)
    dataset = interpret_dataset(unheard_table)
    clips, labels = next(iter(dataset))
    with tf.GradientTape() as tape:
        activation, logits = explainer(clips, training=False)
        target = tf.reshape(logits, [-1]) * tf.where(labels == 1, 1.0, -1.0)
    gradients = tape.gradient(target, activation).numpy()
    assert np.isfinite(gradients).all()
    per_clip = np.abs(gradients).reshape(len(gradients), -1).max(axis=1)
    assert np.all(per_clip > 0), "every clip's class score must depend on the feature maps"


def interpret_dataset(table: pd.DataFrame) -> tf.data.Dataset:
    from speakergender import pipeline
    return pipeline.make_dataset(table, FRONT_END, training=False, batch_size=len(table))


def test_maps_follow_the_explained_class(classifier, explained):
    """Explaining the other class gives a different map: the sign of the logit matters."""
    maps, kept = explained
    features_batch = next(iter(interpret_dataset(kept)))[0].numpy()
    labels = (kept["gender"] == "female").to_numpy().astype(int)
    flipped = interpret.grad_cam(interpret.grad_cam_model(classifier), features_batch, 1 - labels,
                                 (FRAMES, BANDS))
    assert not np.allclose(flipped, maps, atol=1e-3)


# --- numbers from maps ---------------------------------------------------------------------------


def test_band_attention_and_centroid_of_known_maps():
    maps = np.zeros((3, 4, 8), np.float32)
    maps[0, :, 6] = 1.0           # all attention in band 6
    maps[1] = 1.0                 # uniform
    attention = interpret.band_attention(maps)
    np.testing.assert_allclose(attention[:2].sum(axis=1), 1.0)
    centroids = interpret.band_centroid(attention)
    assert centroids[0] == pytest.approx(6.0)
    assert centroids[1] == pytest.approx(3.5)
    assert math.isnan(centroids[2])  # an empty map has no centre


def test_mel_band_centres_match_the_filterbank_peaks():
    centres = interpret.mel_band_centres_hz(FRONT_END)
    matrix = features.mel_matrix(FRONT_END).numpy()
    bin_hz = FRONT_END.sample_rate / FRONT_END.fft_length
    peaks = matrix.argmax(axis=0) * bin_hz
    assert centres.shape == (FRONT_END.mel_bands,)
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(centres, peaks, atol=bin_hz)


def test_summarize_gives_per_gender_numbers_with_their_spread():
    rng = np.random.default_rng(0)
    rows, maps = [], []
    for gender, band in (("female", 40), ("male", 12)):
        for speaker in range(3):
            for _ in range(2):
                single = np.zeros((FRAMES, BANDS), np.float32)
                single[:, band + speaker + int(rng.integers(0, 2))] = 1.0
                maps.append(single)
                rows.append({"speaker": f"{gender[0]}{speaker}", "gender": gender})
    summary = interpret.summarize(np.stack(maps), pd.DataFrame(rows))
    female, male = summary["genders"]["female"], summary["genders"]["male"]
    assert (female["clips"], female["speakers"], male["clips"], male["speakers"]) == (6, 3, 6, 3)
    assert set(female["speaker_centroids"]) == {"f0", "f1", "f2"}
    assert len(female["mean_band_attention"]) == BANDS
    assert sum(female["mean_band_attention"]) == pytest.approx(1.0)
    assert 40 <= female["centroid_mean"] <= 43 and 12 <= male["centroid_mean"] <= 15
    assert female["centroid_std"] > 0 and male["centroid_std"] > 0
    assert 40 <= female["peak_band"] <= 43 and 12 <= male["peak_band"] <= 15
    assert summary["female_minus_male_centroid_bands"] == pytest.approx(
        female["centroid_mean"] - male["centroid_mean"])
    assert summary["effect_size"] > 5
    assert summary["female_speakers_above_male_median"] == 1.0
    assert "higher by" in summary["statement"] and "3 of 3 female speakers" in summary["statement"]
    json.dumps(summary)  # JSON-ready


def test_summarize_says_when_a_gender_is_missing():
    maps = np.ones((2, FRAMES, BANDS), np.float32)
    summary = interpret.summarize(maps, pd.DataFrame({"speaker": ["a", "b"],
                                                      "gender": ["male", "male"]}))
    assert summary["genders"]["female"]["speakers"] == 0
    assert math.isnan(summary["female_minus_male_centroid_bands"])
    assert "cannot be compared" in summary["statement"]


def test_summarize_rejects_a_table_of_another_length(explained):
    maps, kept = explained
    with pytest.raises(ValueError, match="maps but"):
        interpret.summarize(maps, kept.iloc[:-1])


def test_summary_of_a_trained_model_is_finite(explained):
    maps, kept = explained
    summary = interpret.summarize(maps, kept)
    for gender in ("female", "male"):
        numbers = summary["genders"][gender]
        assert numbers["speakers"] == 2 and numbers["clips"] == 6
        assert 0 <= numbers["centroid_mean"] <= BANDS - 1
        assert np.isfinite(numbers["centroid_std"])
    assert np.isfinite(summary["female_minus_male_centroid_bands"])


def test_figures_are_written(explained, tmp_path):
    maps, kept = explained
    written = interpret.figures(maps, kept, tmp_path / "figures", "tiny", prefix="x_",
                                band_hz=interpret.mel_band_centres_hz(FRONT_END))
    assert [p.name for p in written] == ["x_mean_maps.png", "x_band_attention.png",
                                         "x_speaker_centroids.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(holdout_run):
    """A hold-out training run (shared with the other test files): model.keras + config.json."""
    output, _, result = holdout_run
    return output, result


def test_main_writes_figures_and_json(run, tmp_path_factory, tmp_path, capsys):
    output, result = run
    held_out = sorted({s for fold in result["folds"] for s in fold["test_speakers"]})
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    status = interpret.main([str(output), "--data-dir", str(corpus), "--speakers",
                             ",".join(held_out), "--output", str(tmp_path)])
    assert status == 0
    for name in ("gradcam_mean_maps.png", "gradcam_band_attention.png",
                 "gradcam_speaker_centroids.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "gradcam_bands.json").read_text())
    speakers = sum(summary["genders"][g]["speakers"] for g in ("female", "male"))
    assert speakers == len(held_out)
    assert summary["bands"] == BANDS
    assert "Attention centroid" in capsys.readouterr().out


def test_main_explains_what_is_missing(run, tmp_path_factory, tmp_path, capsys):
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    assert interpret.main([str(tmp_path), "--data-dir", str(corpus)]) == 1
    assert "model.keras not found" in capsys.readouterr().err
    output, _ = run
    assert interpret.main([str(output), "--data-dir", str(corpus), "--speakers", "77",
                           "--output", str(tmp_path)]) == 1
    assert "speakers not in" in capsys.readouterr().err
