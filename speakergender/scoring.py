"""Scoring whole recordings with the servable module, as the exported model scores them."""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import tensorflow as tf

from speakergender import pipeline, streaming
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

    Long WAV recordings are scored a block at a time, as `predict` scores them
    (`speakergender.streaming`): a corpus of hour-long recordings is evaluated in bounded
    memory, with the scores that scoring them whole would give.
    """
    params = module.front_end
    paths = table["path"].to_numpy()
    blocks = {path: streaming.plan_blocks(path, params.sample_rate, params.clip_samples,
                                          params.window_hop_samples, streaming.BLOCK_SECONDS)
              for path in paths}
    whole = np.array([path for path in paths if not blocks[path]], dtype=object)
    rows = list(_score_whole(module, whole, batch_size, skip_log)) if len(whole) else []
    for path in paths:
        if blocks[path]:
            row = _score_in_blocks(module, blocks[path], skip_log)
            if row is not None:
                rows.append(row)
    scored = pd.DataFrame(rows, columns=["path", "logit", "probability"])
    columns = [c for c in ("path", "speaker", "gender", "corpus", "condition") if c in table]
    scored = table[columns].merge(scored, on="path", how="inner")
    return scored.assign(label=(scored["gender"] == pipeline.FEMALE).astype(int))


def _score_whole(module: GenderClassifierModule, paths: np.ndarray, batch_size: int,
                 skip_log: pipeline.SkipLog | None):
    """(path, logit, probability) for each decodable file, each decoded whole."""
    recordings = pipeline.recordings_dataset(paths, module.front_end, skip_log)
    batches = recordings.map(tf.autograph.experimental.do_not_convert(
        lambda path, waveform: (path, waveform, tf.shape(waveform)[0])))
    batches = batches.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
    score = _scoring_function(module)
    for paths, waveforms, lengths in batches:
        outputs = score(waveforms, lengths)
        yield from zip([p.decode() for p in paths.numpy()], outputs["logits"].numpy(),
                       outputs["female_probability"].numpy())


def _score_in_blocks(module: GenderClassifierModule, blocks: list[streaming.Block],
                     skip_log: pipeline.SkipLog | None) -> tuple[str, float, float] | None:
    """(path, logit, probability) of a long recording from its blocks' windows, or None (and
    the reason in the skip log) where a block cannot be read or decoded."""
    path = blocks[0].path
    scored = []
    for block in blocks:
        try:
            outputs = module.classify_wav(tf.constant([block.read()]))
        except OSError as error:
            _skip(skip_log, path, str(error.strerror or error))
            return None
        scored.append((block, {key: value[0].numpy() for key, value in outputs.items()}))
        if scored[-1][1]["error"]:
            break  # the first bad block is the file's error
    error, windows = streaming.join_windows(scored)
    if error:
        _skip(skip_log, path, error)
        return None
    summary = module.summarize_windows(**{key: tf.constant(value)
                                          for key, value in windows.items()})
    return path, summary["logits"][0].numpy(), summary["female_probability"][0].numpy()


def _skip(skip_log: pipeline.SkipLog | None, path: str, reason: str) -> None:
    if skip_log is not None:
        skip_log.record(tf.constant([path]), tf.constant([reason]))


# module -> its traced scoring function; entries go with their modules.
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(module: GenderClassifierModule):
    """One traced scoring function per module, however often it scores."""
    if module not in _SCORING_FUNCTIONS:
        _SCORING_FUNCTIONS[module] = tf.function(module.score_recordings, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)],
            autograph=False)
    return _SCORING_FUNCTIONS[module]
