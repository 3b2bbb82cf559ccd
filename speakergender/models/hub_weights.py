"""Pretrained weights from TF Hub SavedModels: resolve a handle, read its variables by name.

TF Hub's YAMNet and VGGish SavedModels expose no trainable variables, and Keras 3 cannot host
`hub.KerasLayer`, so the backbones are rebuilt in Keras and their weights are copied in from the
SavedModel's variables. A handle is a TF Hub or Kaggle URL (downloaded and cached by
`tensorflow_hub`) or a local SavedModel folder, which is how machines without internet access
point the product at a copy (see `python -m speakergender.convert_yamnet`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

YAMNET_HANDLE = "https://tfhub.dev/google/yamnet/1"
YAMNET_KAGGLE_HANDLE = "https://www.kaggle.com/models/google/yamnet/TensorFlow2/yamnet/1"
VGGISH_HANDLE = "https://tfhub.dev/google/vggish/1"


class BackboneDownloadError(RuntimeError):
    """A backbone's pretrained weights could not be fetched from a remote handle."""


def _is_remote(handle: str) -> bool:
    return "://" in handle


def resolve(handle: str) -> Path:
    """The local SavedModel folder for a handle, downloading (and caching) remote ones.

    Args:
      handle: a local SavedModel folder, or a URL `tensorflow_hub` resolves (tfhub.dev, Kaggle
        models, or any URL serving a compressed SavedModel). Downloads go to TFHUB_CACHE_DIR.

    Returns:
      The folder holding `saved_model.pb`.

    Raises:
      BackboneDownloadError: a remote handle could not be downloaded (no network, HTTP 403, ...).
      FileNotFoundError: a local handle is not a SavedModel folder.
    """
    handle = str(handle)
    if not _is_remote(handle):
        return _check_saved_model(Path(handle).expanduser(), handle)
    import tensorflow_hub as hub
    try:
        path = hub.resolve(handle)
    except Exception as error:  # urllib, tarfile and TF errors alike mean "not downloaded"
        raise BackboneDownloadError(
            f"could not download the pretrained backbone from {handle} "
            f"({type(error).__name__}: {error}). This machine may have no internet access, or "
            f"the server refused the request (e.g. HTTP 403). Download the SavedModel on a "
            f"machine that can reach it and point the product at the folder with "
            f"--backbone-handle /path/to/folder; for YAMNet, a folder can also be made offline "
            f"from its TFLite file: python -m speakergender.convert_yamnet --tflite yamnet.tflite "
            f"--output /path/to/folder") from error
    return _check_saved_model(Path(path), handle)


def _check_saved_model(path: Path, handle: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f"backbone handle {handle!r} is neither a URL nor an existing folder; pass a "
            f"TF Hub/Kaggle URL or a local SavedModel folder")
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise FileNotFoundError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    return path


def read_variables(handle_or_path: str) -> dict[str, np.ndarray]:
    """Every variable of a SavedModel, by name.

    Args:
      handle_or_path: as for `resolve`.

    Returns:
      {variable name without the ":0" suffix: float32/int ndarray}.

    Raises:
      BackboneDownloadError, FileNotFoundError: as `resolve`.
      ValueError: two different variables carry the same name.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(resolve(handle_or_path)))
    # A restored tf.Module has no `.variables`; walk the object graph instead.
    values: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for obj in tf.train.TrackableView(loaded).descendants():
        if not isinstance(obj, tf.Variable) or id(obj) in seen:
            continue
        seen.add(id(obj))
        name = re.sub(r":\d+$", "", obj.name)
        value = obj.numpy()
        if name in values and not np.array_equal(values[name], value):
            raise ValueError(f"{handle_or_path}: two different variables are named {name!r}")
        values[name] = value
    return values


def _name_pattern(name: str) -> re.Pattern:
    # Exporters put the whole net under a scope ("yamnet_frames/...", "vggish/..."), and Keras 2
    # numbers auto-named layers ("dense" -> "dense_1") when a model is built twice.
    first, _, rest = name.partition("/")
    tail = re.escape(first) + r"(?:_\d+)?" + (("/" + re.escape(rest)) if rest else "")
    return re.compile(r"(?:^|.*/)" + tail + "$")


def select_variables(variables: Mapping[str, np.ndarray],
                     names: Iterable[str]) -> dict[str, np.ndarray]:
    """Picks the variables a network needs, tolerating an outer scope on their names.

    Args:
      variables: {name: value} as from `read_variables`.
      names: the wanted names, e.g. "layer1/conv/kernel"; a variable matches when its name is
        the wanted name under any outer scope ("yamnet_frames/layer1/conv/kernel"), its first
        part optionally numbered by Keras ("dense_1/kernel" for "dense/kernel").

    Returns:
      {wanted name: value}.

    Raises:
      KeyError: some names match no variable or more than one.
    """
    selected, problems = {}, []
    for name in names:
        pattern = _name_pattern(name)
        matches = sorted(key for key in variables if pattern.match(key))
        exact = [key for key in matches if key == name]
        matches = exact or matches
        if len(matches) == 1:
            selected[name] = variables[matches[0]]
        elif matches:
            problems.append(f"{name} (ambiguous: {', '.join(matches)})")
        else:
            problems.append(f"{name} (missing)")
    if problems:
        sample = ", ".join(sorted(variables)[:8]) or "none"
        raise KeyError(f"the SavedModel does not hold the expected variables: "
                       f"{'; '.join(problems[:6])}{' ...' if len(problems) > 6 else ''}. "
                       f"It has {len(variables)} variables, e.g. {sample}")
    return selected


def assign(variable, value: np.ndarray, name: str) -> None:
    """variable.assign(value) after checking the shape, naming the weight on a mismatch."""
    value = np.asarray(value)
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"{name}: pretrained weight has shape {value.shape}, the network "
                         f"expects {tuple(variable.shape)}")
    variable.assign(value.astype(np.float32))
