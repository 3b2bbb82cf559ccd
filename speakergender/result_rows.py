"""One output row per recording, as `predict` and `score` print it: a FileResult made plain."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # serving imports TensorFlow; the CLIs import this before they need it
    from speakergender.serving import FileResult

# The columns of a CSV row; a JSON row has these and, when asked for, "timeline".
COLUMNS = ("path", "label", "female_probability", "duration_seconds", "windows",
           "windows_disagree", "error")


def decide(result: FileResult, threshold: float | None) -> str:
    """The model's label, or the one a threshold the user gives makes of its probability
    (silence stays 'no speech')."""
    if threshold is None or result.error or result.label == "no speech":
        return result.label
    return "female" if result.female_probability >= threshold else "male"


def error_row(path: str, error: str) -> dict:
    """The row of a recording that could not be classified."""
    return {"path": path, "error": error}


def result_row(result: FileResult, threshold: float | None = None,
               hop_seconds: float | None = None) -> dict:
    """The row of one recording.

    Args:
      result: the recording's result.
      threshold: female from this probability on; None keeps the model's label.
      hop_seconds: given, the row also has a "timeline": each window's start, probability and
        whether it was loud enough to count.

    Returns:
      A dict that `json.dumps` prints as predict's --json line; probabilities and times
      are rounded as predict prints them.
    """
    if result.error:
        return error_row(result.path, result.error)
    row = {"path": result.path, "label": decide(result, threshold),
           "female_probability": round(result.female_probability, 4),
           "duration_seconds": round(result.duration_seconds, 3),
           "windows": len(result.window_probabilities),
           "windows_disagree": result.windows_disagree, "error": ""}
    if hop_seconds is not None:
        row["timeline"] = [
            {"start_seconds": round(i * hop_seconds, 3), "female_probability": round(p, 4),
             "sounding": bool(s)}
            for i, (p, s) in enumerate(zip(result.window_probabilities, result.window_sounding))]
    return row
