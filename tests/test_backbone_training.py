"""A pretrained backbone trains through both stages (head, then top blocks) and resumes across
them: the fine-tuning stage's optimizer tracks other variables than the head stage's."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from speakergender import corpora, interpret, splits, train, training
from speakergender.config import FrontEndParams, TrainParams
from speakergender.models import registry
from speakergender.training import read_state


def test_yamnet_head_then_fine_tuning_trains_and_exports(tmp_path_factory, yamnet_tflite_path,
                                                         capsys):
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    output = tmp_path_factory.mktemp("yamnet-run")
    status = train.main([
        "--data-dir", str(corpus), "--model", "yamnet", "--backbone-handle",
        str(yamnet_tflite_path), "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8",
        "--condition-tests", "none",
        "--output", str(output), "--logdir", str(output / "logs"), "--quiet"])
    assert status == 0, capsys.readouterr().err
    history = (output / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, the head epoch, the fine-tuning epoch
    result = json.loads((output / "metrics.json").read_text())
    assert result["model"] == "yamnet" and (output / "1" / "saved_model.pb").is_file()
    # model.keras (for interpret) reloads with its custom layers and gives the same logits.
    model, front_end = interpret.load_run_model(output)
    assert model.get_layer("statistics_pooling") is not None
    reloaded = tf.saved_model.load(str(output / "1"))
    waveform = np.random.default_rng(0).normal(0, 0.1, (2, 15600)).astype(np.float32)
    served = reloaded.signatures["serving_default"](waveform=tf.constant(waveform))["logits"]
    # One window per row: each loses its own mean.
    prepared = tf.constant(waveform - waveform.mean(axis=1, keepdims=True))
    calibrated = (tf.reshape(model(prepared), [-1]) / result["temperature"]
                  + result["calibration_bias"])
    np.testing.assert_allclose(calibrated, served, atol=1e-4)


def test_the_head_can_read_the_top_embedding(yamnet_tflite_path):
    params = TrainParams(model="yamnet-frozen", backbone_handle=str(yamnet_tflite_path),
                         backbone_layer="embedding")
    model = registry.recipe("yamnet-frozen", FrontEndParams(), params).build()
    assert "statistics_pooling" not in [layer.name for layer in model.layers]
    assert registry._backbone_of(model).output.shape == (None, 1024)
    bad = dataclasses.replace(params, backbone_layer="layer15")
    with pytest.raises(ValueError, match="no layer 'layer15'.*layer14"):
        registry.recipe("yamnet-frozen", FrontEndParams(), bad).build()


def test_fine_tuning_unfreezes_only_the_top_blocks_and_keeps_batch_norm_frozen(
        yamnet_tflite_path):
    params = TrainParams(model="yamnet", backbone_handle=str(yamnet_tflite_path),
                         fine_tune_blocks=2)
    recipe = registry.recipe("yamnet", FrontEndParams(), params)
    model = recipe.build()
    head, fine_tuning = recipe.stages(model)
    head.set_trainable(model)
    head_variables = {v.path for v in model.trainable_variables}
    assert head_variables == {v.path for v in model.get_layer("logits").trainable_variables} | {
        v.path for v in model.get_layer("head_norm").trainable_variables}
    fine_tuning.set_trainable(model)
    names = {v.path for v in model.trainable_variables} - head_variables
    # The head reads layer7 (the backbone's feature_layer): its top two blocks are 6 and 7.
    assert names and all(("layer6" in n or "layer7" in n) for n in names), sorted(names)
    assert not any("bn" in n for n in names)
    # The pretrained weights really are in: the backbone is not at its initial values.
    backbone = registry._backbone_of(model)
    fresh = keras.models.clone_model(backbone)
    assert not np.allclose(backbone.weights[0].numpy(), fresh.weights[0].numpy())


def test_a_run_stopped_between_stages_resumes_into_fine_tuning(tmp_path_factory,
                                                               yamnet_tflite_path):
    # The head stage finishes in one process; a new process must restore its best weights into
    # a model whose optimizer now tracks the unfrozen blocks too.
    table = corpora.load_corpus(helpers.synthetic_corpus(tmp_path_factory)).table
    train_table, validation_table = splits.split_rows(
        table, splits.validation_split(table, 0.3, seed=0))
    params = TrainParams(model="yamnet", backbone_handle=str(yamnet_tflite_path), epochs=1,
                         fine_tune_epochs=1, batch_size=8)
    recipe = registry.recipe("yamnet", FrontEndParams(), params)
    work = tmp_path_factory.mktemp("yamnet-stages")
    head_only = lambda model: recipe.stages(model)[:1]  # noqa: E731
    head_model, _ = training.train_model(recipe.build, head_only, train_table,
                                         validation_table, recipe.front_end, params, work)
    assert read_state(work)["completed_stages"] == 1

    model, history = training.train_model(recipe.build, recipe.stages, train_table,
                                          validation_table, recipe.front_end, params, work)
    assert read_state(work)["completed_stages"] == 2
    assert len(history) == 2  # one epoch of each stage, the first not repeated
    head_logits = model.get_layer("logits").get_weights()[0]
    assert np.isfinite(head_logits).all()
    # Fine-tuning started from the head stage's weights, not from a fresh head.
    fresh = recipe.build().get_layer("logits").get_weights()[0]
    assert not np.allclose(head_logits, fresh)
