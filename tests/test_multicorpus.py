"""Several corpora in one run: corpus names, namespaced speakers, folds stratified by corpus and
gender, cross-corpus hold-out, per-corpus metrics and the model card, on two synthetic corpora
with different recording chains (flat, and band-limited like a telephone line)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import helpers
from speakergender import corpora, metrics, splits
from speakergender.conditions import HELD_OUT_CONDITIONS

PHONE_BAND_HZ = (300.0, 3400.0)


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    flat = helpers.synthetic_corpus(tmp_path_factory, "studio", seed=21)
    phone = helpers.synthetic_corpus(tmp_path_factory, "phone", seed=22, band_hz=PHONE_BAND_HZ)
    return flat, phone


@pytest.fixture(scope="module")
def combined(two_corpora):
    flat, phone = two_corpora
    return corpora.load_corpora([f"studio={flat}", f"phone={phone}"])


def test_corpora_keep_their_names_and_speakers_stay_apart(two_corpora, combined):
    table = combined.table
    assert combined.names == ("studio", "phone")
    assert table.groupby("corpus").size().to_dict() == {"studio": 24, "phone": 24}
    # Both synthetic corpora number their speakers 01..06: namespaced, they are 12 speakers.
    assert table["speaker"].nunique() == 12
    assert set(table.loc[table["corpus"] == "phone", "speaker"]) == {
        f"phone:{n:02d}" for n in range(1, 7)}
    assert "studio: 6 speakers" in corpora.summary(combined)
    # Without names, a corpus is named after its folder; one source keeps its plain ids.
    single = corpora.load_corpora([two_corpora[0]])
    assert single.names == (two_corpora[0].name,)
    assert set(single.table["speaker"]) == {f"{n:02d}" for n in range(1, 7)}


def test_two_corpora_with_one_name_are_refused(two_corpora):
    with pytest.raises(corpora.CorpusError, match="named"):
        corpora.load_corpora([f"same={two_corpora[0]}", f"same={two_corpora[1]}"])


def test_the_phone_corpus_is_band_limited(combined):
    """The fixture's premise: the two recording chains really differ in colour."""
    import soundfile as sf

    def out_of_band_share(corpus):
        rows = combined.table[combined.table["corpus"] == corpus]
        shares = []
        for path in rows["path"]:
            audio, rate = sf.read(path)
            spectrum = np.abs(np.fft.rfft(audio)) ** 2
            frequencies = np.fft.rfftfreq(len(audio), 1 / rate)
            outside = (frequencies < 200) | (frequencies > 4000)
            shares.append(spectrum[outside].sum() / spectrum.sum())
        return np.mean(shares)

    assert out_of_band_share("phone") < 0.1 * out_of_band_share("studio")


def test_folds_are_stratified_by_corpus_and_gender(combined):
    table = combined.table
    folds = splits.speaker_folds(table, 3, seed=0)
    speakers = corpora.speaker_table(table).set_index("speaker")
    assert sorted(s for fold in folds for s in fold.test_speakers) == sorted(speakers.index)
    for fold in folds:
        held = speakers.loc[list(fold.test_speakers)]
        # 3 female and 3 male speakers per corpus over 3 folds: one of each in every fold.
        assert held.groupby(["corpus", "gender"]).size().to_dict() == {
            ("phone", "female"): 1, ("phone", "male"): 1,
            ("studio", "female"): 1, ("studio", "male"): 1}
        splits.assert_speaker_disjoint(*splits.split_rows(table, fold))
    validation = splits.validation_split(table, 0.34, seed=1)
    held = speakers.loc[list(validation.test_speakers)]
    assert set(held.groupby(["corpus", "gender"]).size().index) == {
        (c, g) for c in ("phone", "studio") for g in ("female", "male")}


def test_corpus_holdout_split_tests_on_the_whole_corpus(combined):
    table = combined.table
    split = splits.corpus_holdout_split(table, "phone")
    train, test = splits.split_rows(table, split)
    assert set(train["corpus"]) == {"studio"} and set(test["corpus"]) == {"phone"}
    assert len(test) == 24
    with pytest.raises(ValueError, match="no corpus named"):
        splits.corpus_holdout_split(table, "radio")
    with pytest.raises(ValueError, match="no corpus to train on"):
        splits.corpus_holdout_split(table[table["corpus"] == "phone"], "phone")


def test_reports_break_down_by_corpus():
    clips = pd.DataFrame({
        "speaker": ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"],
        "corpus": ["a"] * 4 + ["b"] * 4,
        "label": [1, 1, 0, 0, 1, 1, 0, 0],
        # Corpus a is called right; in corpus b the woman is called a man.
        "probability": [0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2]})
    report = metrics.evaluation_report(clips)
    assert report["by_corpus"]["a"]["clip"]["balanced_accuracy"] == 1.0
    assert report["by_corpus"]["b"]["clip"]["recall_female"] == 0.0
    assert report["by_corpus"]["b"]["clip"]["balanced_accuracy"] == 0.5
    assert report["clip"]["balanced_accuracy"] == 0.75
    summary = metrics.summarize_folds([report, report])
    assert summary["by_corpus"]["b"]["clip"]["recall_female"]["mean"] == 0.0


@pytest.fixture(scope="module")
def cross_corpus_run(tmp_path_factory, two_corpora):
    flat, phone = two_corpora
    from speakergender import train

    root = helpers.session_dir(tmp_path_factory, "runs")
    output = root / "cross-corpus"
    status = train.main([
        "--data-dir", f"studio={flat}", "--data-dir", f"phone={phone}",
        "--holdout-corpus", "phone", "--condition-tests", "telephone,room",
        "--output", str(output), "--logdir", str(root / "cross-corpus-logs"),
        "--batch-size", "8", "--epochs", "2", "--quiet"])
    assert status == 0
    return output, json.loads((output / "metrics.json").read_text())


def test_cross_corpus_run_tests_on_the_held_out_corpus(cross_corpus_run, capsys):
    output, result = cross_corpus_run
    assert result["evaluation"].startswith("cross-corpus")
    (fold,) = result["folds"]
    assert fold["fold"] == "without-phone"
    assert all(s.startswith("phone:") for s in fold["test_speakers"])
    assert fold["clip"]["count"] == 24
    assert list(fold["by_corpus"]) == ["phone"]
    assert set(result["conditions"]) == {"telephone", "room"}
    assert result["conditions"]["room"]["clip"]["count"] == 24
    predictions = pd.read_csv(output / "condition_predictions.csv")
    assert predictions.groupby("condition").size().to_dict() == {"room": 24, "telephone": 24}
    for name in ("corpus_metrics.png", "condition_metrics.png"):
        assert (output / name).read_bytes()[:4] == b"\x89PNG"
    config = json.loads((output / "config.json").read_text())
    assert [c["name"] for c in config["data"]["corpora"]] == ["studio", "phone"]
    assert config["training"]["holdout_corpus"] == "phone"


def test_model_card_is_written_and_exported(cross_corpus_run):
    output, result = cross_corpus_run
    card = (output / "model_card.md").read_text()
    # Trained on the studio corpus only (the phone one was held out): 3 female, 3 male.
    assert "| studio | 3 | 3 | 24 |" in card and "| phone |" not in card.split("## Eval")[0]
    assert "## Limits" in card and "misgenders" in card
    phone = result["pooled"]["by_corpus"]["phone"]["clip"]["balanced_accuracy"]
    assert f"| phone | 24 | 6 | {phone:.3f} |" in card
    assert "| telephone | 24 |" in card
    assert (output / "1" / "assets" / "model_card.md").read_text() == card
    # The card travels inside the SavedModel: a fresh process reads it through `metadata`.
    shown = helpers.run_python(
        "import sys, tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "print(model.signatures['metadata']()['model_card'].numpy().decode())",
        str(output / "1")).stdout
    assert shown.strip() == card.strip()


def test_a_split_over_two_corpora_reports_each(tmp_path_factory, two_corpora, capsys):
    flat, phone = two_corpora
    from speakergender import train

    root = helpers.session_dir(tmp_path_factory, "runs")
    status = train.main([
        "--data-dir", f"studio={flat}", "--data-dir", f"phone={phone}", "--folds", "0",
        "--test-fraction", "0.4",
        "--condition-tests", "none", "--no-augment", "--output", str(root / "two-corpora"),
        "--logdir", str(root / "two-corpora-logs"), "--batch-size", "8", "--epochs", "1",
        "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "by corpus" in printed and "studio" in printed and "phone" in printed
    result = json.loads((root / "two-corpora" / "metrics.json").read_text())
    (fold,) = result["folds"]
    # 0.4 of each corpus's 3 speakers of each gender: one of each held out, 4 clips each.
    assert {name: report["speakers"] for name, report in fold["by_corpus"].items()} == {
        "studio": 2, "phone": 2}
    assert set(result["summary"]["by_corpus"]) == {"studio", "phone"}
    assert result["pooled"]["by_corpus"]["phone"]["clip"]["count"] == 8


def test_holdout_corpus_and_folds_are_exclusive(two_corpora, capsys):
    from speakergender import train
    status = train.main(["--data-dir", str(two_corpora[0]), "--holdout-corpus", "x",
                         "--folds", "2"])
    assert status == 2
    assert "--holdout-corpus" in capsys.readouterr().err


def test_condition_lists_parse():
    from speakergender.conditions import parse_condition_list
    assert parse_condition_list(",".join(HELD_OUT_CONDITIONS)) == HELD_OUT_CONDITIONS
    assert parse_condition_list("all") == HELD_OUT_CONDITIONS
    assert parse_condition_list("none") == parse_condition_list("") == ()
    assert parse_condition_list(" room, telephone ") == ("room", "telephone")
    with pytest.raises(ValueError, match="unknown condition"):
        parse_condition_list("telephone,vinyl")


def test_metadata_shows_the_model_card(cross_corpus_run, capsys):
    from speakergender import metadata
    output, _ = cross_corpus_run
    assert metadata.main([str(output)]) == 0
    shown = capsys.readouterr().out
    assert "trained on: studio (phone held out for testing)" in shown
    assert (output / "model_card.md").read_text().strip() in shown
    assert metadata.main([str(output / "nothing")]) == 1
    assert "no model" in capsys.readouterr().err


def test_train_normalises_features_for_the_scratch_cnn_by_default():
    from speakergender import train
    parser = train.build_parser()
    front_end, _ = train.params_from_args(parser.parse_args([]))
    assert front_end.feature_normalization == "mean"
    front_end, _ = train.params_from_args(parser.parse_args(["--model", "yamnet"]))
    assert front_end.feature_normalization == "none"
    front_end, params = train.params_from_args(parser.parse_args(
        ["--feature-normalization", "none", "--no-augment"]))
    assert front_end.feature_normalization == "none" and not params.augment.enabled
    _, params = train.params_from_args(parser.parse_args([]))
    assert params.augment.enabled and params.augment.telephone_probability > 0
