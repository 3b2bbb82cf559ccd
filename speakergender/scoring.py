"""Scoring whole recordings with the servable module, as the exported model scores them."""

from __future__ import annotations

import weakref

import pandas as pd
import tensorflow as tf

from speakergender import pipeline
from speakergender.export import GenderClassifierModule


def score_recordings(
    module: GenderClassifierModule,
    table: pd.DataFrame,
    batch_size: int = 32,
    skip_log: pipeline.SkipLog | None = None,
) -> pd.DataFrame:
    """Scores whole recordings as the exported model does (every window, silent ones dropped).

    Args:
      module: the servable model.
      table: recordings with `path`, `speaker` and `gender`.
      batch_size: recordings per call.
      skip_log: where unreadable files are logged and counted.

    Returns:
      One row per decodable recording: path, speaker, gender (corpus and condition where the
      table has them), label (1 female), logit, probability.
    """
    recordings = pipeline.recordings_dataset(table["path"].to_numpy(), module.front_end, skip_log)
    batches = recordings.map(tf.autograph.experimental.do_not_convert(
        lambda path, waveform: (path, waveform, tf.shape(waveform)[0])))
    batches = batches.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
    score = _scoring_function(module)
    rows = []
    for paths, waveforms, lengths in batches:
        outputs = score(waveforms, lengths)
        rows.extend(zip([p.decode() for p in paths.numpy()], outputs["logits"].numpy(),
                        outputs["female_probability"].numpy()))
    scored = pd.DataFrame(rows, columns=["path", "logit", "probability"])
    columns = [c for c in ("path", "speaker", "gender", "corpus", "condition") if c in table]
    scored = table[columns].merge(scored, on="path", how="inner")
    return scored.assign(label=(scored["gender"] == pipeline.FEMALE).astype(int))


# module -> its traced scoring function; entries go with their modules.
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(module: GenderClassifierModule):
    """One traced scoring function per module, however often it scores."""
    if module not in _SCORING_FUNCTIONS:
        _SCORING_FUNCTIONS[module] = tf.function(module.score_recordings, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)],
            autograph=False)
    return _SCORING_FUNCTIONS[module]
