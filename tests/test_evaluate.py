"""evaluate CLI: two exported models on the same recordings, speaker filters, training runs."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import pytest

import helpers
from speakergender import corpora, evaluate


@pytest.fixture(scope="module")
def models(exported_model, untrained_exported_model) -> tuple[Path, Path]:
    return exported_model, untrained_exported_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Speakers neither model trained on."""
    return helpers.synthetic_corpus(tmp_path_factory, "evaluate", female_speakers=2,
                                    male_speakers=2, clips_per_speaker=3, seed=8)


@pytest.fixture(scope="module")
def comparison(models, corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    out = folder / "out"
    status = _main([str(m) for m in models] + [
        "--data-dir", str(corpus), "--json", str(out / "metrics.json"), "--csv",
        str(out / "table.csv"), "--plots", str(out / "plots")], folder / "stdout.txt")
    return status, out, (folder / "stdout.txt").read_text()


def _main(argv: list[str], stdout_path: Path) -> int:
    """Runs evaluate.main with its stdout in `stdout_path`; creates `out/` beside it."""
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    (stdout_path.parent / "out").mkdir(exist_ok=True)
    with open(stdout_path, "w") as stdout, contextlib.redirect_stdout(stdout):
        return evaluate.main(argv)


def test_two_models_one_row_each(comparison, corpus, trained_classifier):
    status, out, stdout = comparison
    assert status == 0
    lines = stdout.strip().splitlines()
    assert len(lines) == 4  # header, rule, one row per model
    assert [line.split()[0] for line in lines[2:]] == ["tiny", "untrained"]
    assert "ms/clip" in lines[0] and "params" in lines[0]

    rows = json.loads((out / "metrics.json").read_text())
    clips = len(corpora.load_corpus(corpus).table)
    parameters = trained_classifier.count_params()
    for name in ("tiny", "untrained"):
        row = rows[name]
        assert row["clip_count"] == clips and row["report"]["speakers"] == 4
        assert row["ms_per_clip"] > 0
        # Both are the scratch CNN: the same weights counted, optimizer state not.
        assert row["parameters"] == parameters
        assert row["failed_files"] == []
    # The trained model tells these unheard synthetic speakers apart.
    assert rows["tiny"]["clip_balanced_accuracy"] >= 0.75

    with open(out / "table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["model"] for row in table] == ["tiny", "untrained"]
    for row in table:
        assert float(row["ms_per_clip"]) > 0 and int(row["parameters"]) == parameters

    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["confusion_tiny.png", "confusion_untrained.png", "roc.png",
                     "speakers_tiny.png", "speakers_untrained.png"]
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_speakers_restricts_the_recordings(models, corpus, tmp_path):
    table = corpora.load_corpus(corpus).table
    chosen = sorted(table["speaker"].unique())[:2]
    status = _main([str(models[0]), "--data-dir", str(corpus), "--speakers", ",".join(chosen),
                    "--json", str(tmp_path / "out" / "m.json")], tmp_path / "stdout.txt")
    assert status == 0
    row = json.loads((tmp_path / "out" / "m.json").read_text())["tiny"]
    assert row["clip_count"] == int(table["speaker"].isin(chosen).sum())
    assert row["report"]["speakers"] == 2


def test_unknown_speaker_and_missing_data_dir_are_errors(models, corpus, tmp_path, capsys):
    assert _main([str(models[0]), "--data-dir", str(corpus), "--speakers", "77"],
                 tmp_path / "stdout.txt") == 1
    assert "77" in capsys.readouterr().err
    assert _main([str(models[0])], tmp_path / "stdout.txt") == 2
    assert _main([str(tmp_path / "nothing"), "--data-dir", str(corpus)],
                 tmp_path / "stdout.txt") == 1


def test_cross_validation_compares_run_folders(folds_run, holdout_run, tmp_path, capsys):
    folds_output, _, folds_result = folds_run
    holdout_output, _, holdout_result = holdout_run
    status = _main([str(folds_output), str(holdout_output), "--cross-validation", "--json",
                    str(tmp_path / "out" / "cv.json")], tmp_path / "stdout.txt")
    assert status == 0
    # Different corpora, so different speaker folds: the comparison says so.
    assert "not evaluated on the same speaker folds" in capsys.readouterr().err
    rows = json.loads((tmp_path / "out" / "cv.json").read_text())
    assert set(rows) == {"folds", "holdout"}
    for name, result in (("folds", folds_result), ("holdout", holdout_result)):
        summary = result["summary"]["clip"]["balanced_accuracy"]["mean"]
        assert json.dumps(rows[name]["clip_balanced_accuracy"]) == json.dumps(summary)
        assert rows[name]["clip_count"] == result["pooled"]["clip"]["count"]
        assert rows[name]["parameters"] == result["parameters"]
    lines = (tmp_path / "stdout.txt").read_text().strip().splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["folds", "holdout"]


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in evaluate.build_parser()._actions:
        if action.option_strings and action.option_strings[-1] != "--help":
            assert action.option_strings[-1] in text
            assert action.help, f"{action.option_strings[-1]} has no help text"


def test_several_corpora_and_held_out_conditions(models, corpus, tmp_path_factory, tmp_path):
    other = helpers.synthetic_corpus(tmp_path_factory, "evaluate-phone", female_speakers=2,
                                     male_speakers=2, clips_per_speaker=2, seed=9,
                                     band_hz=(300.0, 3400.0))
    status = _main([str(models[0]), "--data-dir", f"studio={corpus}", "--data-dir",
                    f"phone={other}", "--conditions", "telephone,resampled_48k", "--json",
                    str(tmp_path / "out" / "rows.json")], tmp_path / "stdout.txt")
    assert status == 0
    stdout = (tmp_path / "stdout.txt").read_text()
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())
    assert list(rows) == ["tiny", "tiny telephone", "tiny resampled_48k"]
    assert [rows[name]["condition"] for name in rows] == ["clean", "telephone", "resampled_48k"]
    assert all(row["clip_count"] == 12 + 8 for row in rows.values())
    by_corpus = rows["tiny"]["report"]["by_corpus"]
    assert {name: report["clip"]["count"] for name, report in by_corpus.items()} == {
        "studio": 12, "phone": 8}
    assert "by corpus:" in stdout and "tiny / phone" in stdout
    # 48 kHz float copies of the same recordings score as the originals do, within the
    # resampler's error.
    assert rows["tiny resampled_48k"]["report"]["clip"]["roc_auc"] == pytest.approx(
        rows["tiny"]["report"]["clip"]["roc_auc"], abs=0.05)
    assert _main([str(models[0]), "--data-dir", str(corpus), "--conditions", "vinyl"],
                 tmp_path / "stdout.txt") == 1
