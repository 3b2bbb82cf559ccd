"""A pretrained backbone trains through both stages (head, then top blocks) and resumes across
them: the fine-tuning stage's optimizer tracks other variables than the head stage's."""

from __future__ import annotations

import json

import keras
import numpy as np

import helpers
from speakergender import corpora, splits, train, training
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
        "--output", str(output), "--logdir", str(output / "logs"), "--quiet"])
    assert status == 0, capsys.readouterr().err
    history = (output / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, the head epoch, the fine-tuning epoch
    result = json.loads((output / "metrics.json").read_text())
    assert result["model"] == "yamnet" and (output / "1" / "saved_model.pb").is_file()


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
    assert names and all(("layer13" in n or "layer14" in n) for n in names), sorted(names)
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
