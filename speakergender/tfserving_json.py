"""TensorFlow Serving's REST JSON: predict requests to NumPy arrays, outputs to JSON.

What a client of TF Serving sends and reads, so that it works unchanged against `rest_api`:
the row ("instances") and columnar ("inputs") request formats, {"b64": ...} bytes, TF Serving's
number and string formats and error messages, and SignatureDefs as its metadata endpoint
prints them. No HTTP and no limits here: `rest_api` serves these.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

DEFAULT_SIGNATURE = "serving_default"
BYTES_SUFFIX = "_bytes"


class ApiError(Exception):
    """An error answered as TF Serving answers it: {"error": message} with a status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class TensorSpecInfo:
    dtype: tf.DType
    shape: tuple[int | None, ...] | None  # None: unknown rank


def spec_info(spec: tf.TensorSpec) -> TensorSpecInfo:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorSpecInfo(spec.dtype, shape)


def signature_defs(version_dir) -> dict:
    """The SavedModel's SignatureDefs as TF Serving prints them (proto field names, defaults)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    graph = next((g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags),
                 saved.meta_graphs[0])
    # All of them, __saved_model_init_op included, as TF Serving lists them.
    return {key: _message_dict(value) for key, value in sorted(graph.signature_def.items())}


def _message_dict(message) -> dict:
    """A proto as JSON-ready dict: proto field names, fields at their defaults included."""
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf before 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)


# --- JSON in ----------------------------------------------------------------------------------


@dataclasses.dataclass
class PredictRequest:
    signature: str
    row_format: bool
    inputs: dict[str, np.ndarray]
    # Row -> message, for recordings refused before scoring (reported in the error output).
    refused: dict[int, str] = dataclasses.field(default_factory=dict)
    # Per row, the largest (bytes, seconds) among its inputs; for batching's cost bound.
    row_cost: tuple[float, float] = (0.0, 0.0)


def parse_predict_request(body: bytes, input_specs: Mapping[str, Mapping[str, TensorSpecInfo]]
                          ) -> PredictRequest:
    """A TF Serving predict request (JSON) -> inputs as NumPy arrays.

    Args:
      body: the request's JSON.
      input_specs: signature name -> input name -> its dtype and shape.

    Raises:
      ApiError: 400 for malformed JSON, base64, shapes or types, or an unknown signature.
    """
    try:
        request = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError included
        raise ApiError(400, f"JSON Parse error: {error}") from None
    except RecursionError:
        raise ApiError(400, "JSON Parse error: nested too deeply") from None
    if not isinstance(request, dict):
        raise ApiError(400, "JSON Value: the request must be a JSON object with 'instances' "
                            "or 'inputs'")
    signature = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise ApiError(400, "'signature_name' key must be a string value.")
    signature = signature or DEFAULT_SIGNATURE
    if signature not in input_specs:
        raise ApiError(400, f'Serving signature name: "{signature}" not found in signature '
                            f"def (this model has: {', '.join(sorted(input_specs))})")
    specs = input_specs[signature]
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        raise ApiError(400, "Missing 'inputs' or 'instances' key" if not has_instances else
                            "Not formatted correctly expecting only one of 'inputs' or "
                            "'instances' keys exclusively")
    if has_instances:
        values = _row_values(request["instances"], specs)
    else:
        values = _columnar_values(request["inputs"], specs)
    inputs = {name: _to_array(name, value, specs[name]) for name, value in values.items()}
    return PredictRequest(signature, has_instances, inputs)


def _is_b64(value: Any) -> bool:
    """A {"b64": ...} object (its value is checked when decoded)."""
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _row_values(instances: Any, specs: dict[str, TensorSpecInfo]) -> dict[str, list]:
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, "'instances' must be a non-empty JSON list")
    if not specs:
        raise ApiError(400, "this signature takes no inputs; send {\"inputs\": {}}")
    named = all(isinstance(item, dict) and not _is_b64(item) for item in instances)
    if not named:
        if len(specs) != 1 or any(isinstance(item, dict) and not _is_b64(item)
                                  for item in instances):
            raise ApiError(400, "instances must be objects keyed by input name "
                                f"({', '.join(sorted(specs))}) or, for a signature with "
                                "one input, that input's values")
        return {next(iter(specs)): instances}
    values: dict[str, list] = {name: [] for name in specs}
    for index, item in enumerate(instances):
        if set(item) != set(specs):
            missing, extra = set(specs) - set(item), set(item) - set(specs)
            raise ApiError(400, f"instance {index}: "
                                + (f"missing named input(s) {sorted(missing)}" if missing
                                   else f"JSON object: does not have named input(s) "
                                        f"{sorted(extra)}"))
        for name in specs:
            values[name].append(item[name])
    return values


def _columnar_values(inputs: Any, specs: dict[str, TensorSpecInfo]) -> dict[str, Any]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if set(inputs) != set(specs):
            missing, extra = set(specs) - set(inputs), set(inputs) - set(specs)
            raise ApiError(400, f"missing named input(s) {sorted(missing)}" if missing else
                                f"JSON object: does not have named input(s) {sorted(extra)}")
        return dict(inputs)
    if len(specs) != 1:
        raise ApiError(400, "'inputs' must be an object keyed by input name "
                            f"({', '.join(sorted(specs))})")
    return {next(iter(specs)): inputs}


def _to_array(name: str, value: Any, spec: TensorSpecInfo) -> np.ndarray:
    if spec.dtype == tf.string:
        array = _string_array(name, value)
    else:
        array = _numeric_array(name, value, spec.dtype)
    if spec.shape is not None:
        if array.ndim != len(spec.shape) or any(
                want is not None and want != got for want, got in zip(spec.shape, array.shape)):
            want = "[" + ", ".join("-1" if d is None else str(d) for d in spec.shape) + "]"
            raise ApiError(400, f"input {name!r}: shape {list(array.shape)} does not match "
                                f"the signature's {want}")
    return array


def _string_array(name: str, value: Any) -> np.ndarray:
    def convert(item, path):
        if isinstance(item, list):
            return [convert(x, f"{path}[{i}]") for i, x in enumerate(item)]
        if isinstance(item, str):
            return item.encode()
        if _is_b64(item) and isinstance(item["b64"], str):
            try:
                return base64.b64decode(item["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"{path}: Unable to base64 decode") from None
        if isinstance(item, dict) and "b64" in item:
            raise ApiError(400, f"{path}: JSON Value not formatted correctly for base64 data "
                                "(expected {\"b64\": \"<base64 string>\"})")
        raise ApiError(400, f"{path}: JSON Value: {_short(item)} is not of expected type: "
                            "DT_STRING (a string or {\"b64\": ...})")

    nested = convert(value, name)
    shape = _nested_shape(nested)
    flat = _flatten(nested, shape, name)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _nested_shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _flatten(nested: Any, shape: tuple[int, ...], name: str) -> list:
    if not shape:
        if isinstance(nested, list):
            raise ApiError(400, f"input {name!r}: lists nested unevenly")
        return [nested]
    if not isinstance(nested, list) or len(nested) != shape[0]:
        raise ApiError(400, f"input {name!r}: every instance must have the same shape")
    flat = []
    for item in nested:
        flat.extend(_flatten(item, shape[1:], name))
    return flat


def _numeric_array(name: str, value: Any, dtype: tf.DType) -> np.ndarray:
    try:
        array = np.array(value)
    except (ValueError, TypeError):
        raise ApiError(400, f"input {name!r}: every instance must have the same shape "
                            "(lists of equal length)") from None
    if array.dtype.kind not in "fiu" or (array.dtype.kind == "f" and dtype.is_integer):
        raise ApiError(400, f"input {name!r}: expected numbers of type {dtype.name}, got "
                            f"{_short(value)}")
    return array.astype(dtype.as_numpy_dtype, copy=False)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def input_location(name: str, index: tuple) -> str:
    return f"{name}[{']['.join(map(str, index))}]" if index else name


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if not inputs:
        return 0
    if len(sizes) != 1 or None in sizes:
        raise ApiError(400, "every input needs the same batch (first) dimension")
    return sizes.pop()


# --- JSON out ---------------------------------------------------------------------------------


def tensor_json(name: str, value: np.ndarray) -> str:
    """A tensor as TF Serving writes it: nested lists; float32 in its shortest round-trip
    form, NaN / Infinity as bare tokens; strings as text, or {"b64": ...} for outputs named
    *_bytes and for bytes that are not UTF-8."""
    return _nest(_leaf_texts(name, value))


def _leaf_texts(name: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    kind = value.dtype.kind
    if kind == "f":
        texts = value.astype(str)
        if not np.all(np.isfinite(value)):
            texts = np.where(np.isnan(value), "NaN", texts)
            texts = np.where(np.isposinf(value), "Infinity", texts)
            texts = np.where(np.isneginf(value), "-Infinity", texts)
        return texts
    if kind == "b":
        return np.where(value, "true", "false")
    if kind in "iu":
        return value.astype(str)
    if kind in "OSU":
        texts = np.empty(value.shape, dtype=object)
        for index, item in np.ndenumerate(value):
            texts[index] = _string_json(name, item)
        return texts
    raise ApiError(500, f"output {name!r}: cannot write {value.dtype} as JSON")


def _string_json(name: str, item) -> str:
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)
    if not name.endswith(BYTES_SUFFIX):
        try:
            return json.dumps(item.decode("utf-8"), ensure_ascii=False)
        except UnicodeDecodeError:
            pass
    return '{"b64": "' + base64.b64encode(item).decode("ascii") + '"}'


def _nest(texts) -> str:
    """Leaf texts (an array of them, or one) as nested JSON lists."""
    if not isinstance(texts, np.ndarray):
        return str(texts)
    if texts.ndim == 0:
        return str(texts[()])
    if texts.ndim == 1:
        return "[" + ", ".join(map(str, texts.tolist())) + "]"
    return "[" + ", ".join(_nest(part) for part in texts) + "]"


def predict_response_json(outputs: Mapping[str, np.ndarray], row_format: bool) -> str:
    """TF Serving's predict response: {"predictions": [...]} or {"outputs": ...}.

    A signature with one output gets bare values; with several, an object per row (row
    format) or per output (columnar).
    """
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return '{"outputs": ' + tensor_json(names[0], outputs[names[0]]) + "}"
        return ('{"outputs": {' + ", ".join(f"{json.dumps(name)}: "
                                            f"{tensor_json(name, outputs[name])}"
                                            for name in names) + "}}")
    sizes = {np.ndim(outputs[name]) and np.shape(outputs[name])[0] for name in names}
    if len(sizes) != 1 or any(np.ndim(outputs[name]) == 0 for name in names):
        raise ApiError(400, "this signature's outputs do not share a batch dimension; use the "
                            "columnar format ('inputs')")
    rows = sizes.pop()
    per_row = {name: [_nest(part) for part in _leaf_texts(name, outputs[name])]
               for name in names}
    if len(names) == 1:
        return '{"predictions": [' + ", ".join(per_row[names[0]]) + "]}"
    items = ["{" + ", ".join(f"{json.dumps(name)}: {per_row[name][row]}" for name in names)
             + "}" for row in range(rows)]
    return '{"predictions": [' + ", ".join(items) + "]}"
