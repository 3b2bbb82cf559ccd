"""A RunInference model handler that scores audio with a SavedModel's `classify_wav` signature.

Beam's own TensorFlow handlers load models with `tf.keras.models.load_model`, which Keras 3
cannot do for a SavedModel; this one loads with `tf.saved_model.load` (through
`serving.load_model`) and feeds WAV bytes, as `predict` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from speakergender import serving


class Readable(Protocol):
    """What the handler scores: anything that reads itself as WAV bytes (a recording, a block)."""

    def read(self) -> bytes: ...


class ClassifyWavModelHandler(ModelHandler[Readable, dict, serving.LoadedModel]):
    """Scores a batch of recordings (or blocks of one) in one `classify_wav` call.

    Each PredictionResult's inference is that example's row of the signature's outputs, a dict
    of numpy values (`outputs[key][index]`). An example that cannot be read gets a row with
    only "error" (bytes, as the model reports its own decoding errors); a batch the model call
    rejects as a whole is scored one example at a time, so one bad file never fails the others.
    """

    def __init__(self, model_path: str, batch_size: int = 32,
                 element_weight: Callable[[Any], int] | None = None):
        """
        Args:
          model_path: a SavedModel version folder each worker can read.
          batch_size: examples per model call at most; with `element_weight`, the most their
            weights may add up to.
          element_weight: the weight of an element RunInference batches (a (key, example) pair
            where keyed); 1 each if not given.
        """
        # Beam 2.77's BatchElements has no separate cap on a batch's weight (ModelHandler's
        # max_batch_weight reaches it as an unknown argument): weights count towards the size.
        super().__init__(min_batch_size=1, max_batch_size=batch_size,
                         element_size_fn=element_weight)
        self._model_path = model_path

    def load_model(self) -> serving.LoadedModel:
        return serving.load_model(self._model_path)

    def run_inference(self, batch: Sequence[Readable], model: serving.LoadedModel,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        contents, read_errors = serving.read_each(example.read for example in batch)
        rows = _classify(model, contents)
        for index, example in enumerate(batch):
            row = {"error": read_errors[index].encode()} if index in read_errors else rows[index]
            yield PredictionResult(example, row, model_id=str(model.path))

    def get_num_bytes(self, batch: Sequence[Readable]) -> int:
        # The default pickles the batch; the examples are small descriptions of what to read.
        return sum(len(repr(example)) for example in batch)

    def get_metrics_namespace(self) -> str:
        return "speakergender"


def _classify(model: serving.LoadedModel, contents: list[bytes]) -> list[dict]:
    """One row of `classify_wav` outputs per WAV bytes; the whole batch in one call if it can."""
    try:
        outputs = model.classify_wav(wav_bytes=tf.constant(contents))
    except tf.errors.OpError as error:
        if len(contents) == 1:
            return [{"error": f"the model failed on it: {error.message}".encode()}]
        return [row for content in contents for row in _classify(model, [content])]
    outputs = {key: value.numpy() for key, value in outputs.items()}
    return [{key: value[index] for key, value in outputs.items()}
            for index in range(len(contents))]
