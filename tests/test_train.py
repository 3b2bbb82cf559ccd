"""train CLI end to end on tiny synthetic corpora: outputs, resume after a kill, conflicts,
determinism, MirroredStrategy and unreadable files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import helpers
from speakergender import train


def test_cross_validation_run_writes_every_output(folds_run):
    output, logs, result = folds_run
    for name in ("config.json", "metrics.json", "history.csv", "predictions.csv",
                 "confusion_matrix.png", "roc.png", "speaker_accuracy.png"):
        assert (output / name).is_file(), name
    assert (output / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "1" / "saved_model.pb").is_file()
    assert not (output / "work").exists()  # checkpoints are cleaned up once the run is done
    assert not list(output.glob(".export-*"))

    config = json.loads((output / "config.json").read_text())
    assert config["training"]["folds"] == 2 and config["training"]["epochs"] == 2
    assert config["front_end"]["mel_bands"] == 64

    assert result["evaluation"] == "speaker-disjoint 2-fold"
    assert [fold["fold"] for fold in result["folds"]] == ["fold1", "fold2"]
    speakers = [s for fold in result["folds"] for s in fold["test_speakers"]]
    assert sorted(speakers) == [f"{n:02d}" for n in range(1, 7)]  # each speaker tested once
    for fold in result["folds"]:
        for key in ("accuracy", "balanced_accuracy", "recall_female", "recall_male", "roc_auc",
                    "confusion"):
            assert key in fold["clip"], key
        assert {"speaker_vote", "speaker_mean"} <= set(fold)
        assert fold["speakers"] == len(fold["test_speakers"])
    summary = result["summary"]["clip"]["balanced_accuracy"]
    fold_values = [fold["clip"]["balanced_accuracy"] for fold in result["folds"]]
    assert summary["mean"] == pytest.approx(np.mean(fold_values))
    assert summary["std"] == pytest.approx(np.std(fold_values))
    assert "balanced_accuracy" in result["summary"]["speaker_vote"]
    # Every readable clip is scored once, by the fold that held its speaker out.
    assert result["pooled"]["clip"]["count"] == 24
    assert result["parameters"] > 0 and result["temperature"] > 0
    assert Path(result["saved_model"]) == output / "1"

    history = pd.read_csv(output / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "val_loss", "balanced_accuracy", "recall_female"} <= set(history.columns)


def test_an_unreadable_file_is_skipped_and_counted(folds_run, tmp_path_factory):
    output, _, result = folds_run
    _, corrupt = helpers.corpus_with_corrupt_file(tmp_path_factory)
    # One unreadable file, however many times the folds read it.
    assert result["skipped_files"] == 1
    log = (output / "skipped_files.log").read_text()
    assert str(corrupt) in log


def _events(folder: Path):
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        yield from tf.compat.v1.train.summary_iterator(str(path))


def test_tensorboard_logs(folds_run):
    _, logs, _ = folds_run
    for run in ("fold1", "fold2", "final"):
        tags = {value.tag for event in _events(logs / run / "train")
                for value in event.summary.value}
        assert "epoch_loss" in tags, run
    summary = list(_events(logs / "summary"))
    plugins = {value.metadata.plugin_data.plugin_name for event in summary
               for value in event.summary.value}
    assert "hparams" in plugins
    tags = {value.tag for event in summary for value in event.summary.value}
    assert {"test/clip_balanced_accuracy", "test/confusion_matrix", "examples/female",
            "examples/male", "test/by_condition", "test/by_corpus"} <= tags
    # Per held-out condition (the run's default condition tests) and per corpus.
    assert "test_by_condition/telephone/clip_balanced_accuracy" in tags
    assert any(tag.startswith("test_by_corpus/") for tag in tags)


def test_another_config_in_the_same_folder_is_refused(folds_run, tmp_path_factory, capsys):
    output, logs, _ = folds_run
    corpus, _ = helpers.corpus_with_corrupt_file(tmp_path_factory)
    before = (output / "config.json").read_text()
    status = train.main(["--data-dir", str(corpus), "--output", str(output), "--logdir",
                         str(logs), "--epochs", "3", "--folds", "2", "--quiet"])
    assert status == 1
    error = capsys.readouterr().err
    assert "another configuration" in error and str(output) in error and "--no-resume" in error
    assert (output / "config.json").read_text() == before
    assert not (output / "2").exists()


def test_help_mentions_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    parser = train.build_parser()
    for action in parser._actions:
        long_options = [o for o in action.option_strings if o.startswith("--")]
        if not long_options or long_options[0] == "--help":
            continue
        assert long_options[0] in text
        assert action.help, f"{long_options[0]} has no help text"


def test_deterministic_runs_repeat_exactly(holdout_run, tmp_path_factory):
    _, _, first = holdout_run
    _, _, second = helpers.holdout_run(tmp_path_factory, "holdout-again")
    assert first["evaluation"] == "speaker-disjoint hold-out"
    for key in ("pooled", "summary", "temperature", "parameters", "skipped_files"):
        # NaN (e.g. an undefined F1) compares equal through its JSON text.
        assert json.dumps(first[key]) == json.dumps(second[key]), key
    for fold, again in zip(first["folds"], second["folds"], strict=True):
        timings = {key for key in fold if key.endswith("_seconds")}
        assert json.dumps({k: v for k, v in fold.items() if k not in timings}) == \
            json.dumps({k: v for k, v in again.items() if k not in timings})


def _train_command(corpus: Path, output: Path, *options: str) -> list[str]:
    return [helpers.PYTHON, "-m", "speakergender.train", "--data-dir", str(corpus),
            "--output", str(output), "--logdir", str(output.parent / "logs"),
            "--batch-size", "8", "--condition-tests", "none", "--no-augment", *options]


def test_a_killed_run_resumes(tmp_path, tmp_path_factory):
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    output = tmp_path / "run"
    command = _train_command(corpus, output, "--epochs", "5", "--folds", "0", "--patience",
                             "100")
    state_path = output / "work" / "holdout" / "state.json"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=helpers.python_env(), cwd=helpers.REPO_ROOT)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if json.loads(state_path.read_text()).get("epoch", -1) >= 1:
                        break
                except (FileNotFoundError, json.JSONDecodeError):
                    pass
                time.sleep(0.05)
            assert process.poll() is None, "the run ended before it could be killed:\n" + \
                (tmp_path / "first.log").read_text()[-3000:]
            os.kill(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    killed_at = json.loads(state_path.read_text())["epoch"]
    assert 1 <= killed_at < 4
    assert not (output / "metrics.json").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=helpers.python_env(), cwd=helpers.REPO_ROOT)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming training from epoch {killed_at + 2}" in second.stdout
    history = pd.read_csv(output / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3, 4]  # every epoch once, in order
    assert (output / "1" / "saved_model.pb").is_file()
    assert json.loads((output / "metrics.json").read_text())["folds"][0]["fold"] == "holdout"


MIRRORED_SCRIPT = """
import json, sys
from pathlib import Path
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from speakergender import corpora, experiment
from speakergender.config import FrontEndParams, TrainParams

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
table = corpora.load_corpus(sys.argv[1]).table
paths = experiment.RunPaths(output=Path(sys.argv[2]), logs=None)
result = experiment.run_experiment(
    table, FrontEndParams(), TrainParams(epochs=1, batch_size=8), paths,
    {"source": "synthetic"}, strategy=strategy, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "saved_model": result["saved_model"],
                  "clips": result["pooled"]["clip"]["count"]}))
"""


@pytest.mark.slow  # a fresh process, one epoch under MirroredStrategy and an export: ~40-70 s
def test_mirrored_strategy_on_two_cpus(tmp_path, tmp_path_factory):
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    result = helpers.run_python(MIRRORED_SCRIPT, str(corpus), str(tmp_path / "run"))
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["replicas"] == 2
    assert Path(info["saved_model"], "saved_model.pb").is_file()
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [0] and np.isfinite(history["loss"]).all()
    assert info["clips"] > 0
