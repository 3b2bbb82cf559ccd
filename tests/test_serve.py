"""The web app and TF Serving-compatible REST API (`speakergender.serve`), over real sockets.

Servers run in-process (uvicorn in a background thread, on a free loopback port) around one
loaded SavedModel; every request goes through httpx over HTTP. Answers are checked against the
SavedModel's own `classify_wav` / `serving_default` outputs on the same inputs.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
import uvicorn

import helpers
import wavfiles
from speakergender import batching, rest_api, serve, serving, synthetic, tfserving_json
from speakergender.wav_layout import layout_of_bytes

RATE = 16000
ATOL = 1e-6


# --- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(app):
    """Serves `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def model_dir(untrained_exported_model) -> Path:
    return untrained_exported_model


@pytest.fixture(scope="module")
def loaded(model_dir) -> serving.LoadedModel:
    return serving.load_model(model_dir)


@pytest.fixture(scope="module")
def servable(loaded) -> rest_api.Servable:
    return rest_api.Servable(loaded)


def start(servable, **options):
    """A running server for `servable` with these ServerOptions; (base URL, app)."""
    app = rest_api.create_app(servable, serve.ServerOptions(**options))
    return running_server(app), app


@pytest.fixture(scope="module")
def base_url(servable):
    context, _ = start(servable)
    with context as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def name(loaded) -> str:
    return loaded.name


# --- audio ------------------------------------------------------------------------------------


def voice(seconds: float, gender: str = "female", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return synthetic.utterance(synthetic.speaker_voice(gender, rng), seconds, RATE, rng)


def wav_bytes(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


@pytest.fixture(scope="module")
def wavs() -> list[bytes]:
    """Recordings of different lengths, voices and encodings (so windows differ)."""
    return [wav_bytes(voice(1.0, "female", 1)),
            wav_bytes(voice(2.5, "male", 2), subtype="FLOAT"),
            wav_bytes(voice(4.0, "female", 3), subtype="PCM_24"),
            wav_bytes(np.concatenate([np.zeros(RATE // 2), voice(1.5, "male", 4)]))]


def direct(loaded, wav_list: list[bytes]) -> dict[str, np.ndarray]:
    """The SavedModel's own classify_wav outputs for these files, in one call."""
    outputs = loaded.classify_wav(wav_bytes=tf.constant(wav_list))
    return {key: value.numpy() for key, value in outputs.items()}


def assert_row_matches(prediction: dict, outputs: dict[str, np.ndarray], row: int) -> None:
    """A JSON prediction equals row `row` of the model's outputs (per-window values up to the
    row's own windows)."""
    assert prediction["error"] == outputs["error"][row].decode()
    assert prediction["label"] == outputs["label"][row].decode()
    for key in ("female_probability", "logits", "duration_seconds"):
        np.testing.assert_allclose(prediction[key], outputs[key][row], atol=ATOL, rtol=0)
    count = int(outputs["window_count"][row])
    assert prediction["window_count"] == count
    np.testing.assert_allclose(prediction["window_logits"][:count],
                               outputs["window_logits"][row, :count], atol=ATOL, rtol=0)
    assert prediction["window_sounding"][:count] == outputs["window_sounding"][row, :count].tolist()
    assert prediction["windows_disagree"] == bool(outputs["windows_disagree"][row])


def predict(client, name, body, **kwargs) -> httpx.Response:
    return client.post(f"/v1/models/{name}:predict", json=body, **kwargs)


# --- status and metadata ----------------------------------------------------------------------


def test_model_status_in_tf_serving_shape(client, name):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    for path in (f"/v1/models/{name}", f"/v1/models/{name}/versions/1"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == expected
    missing = client.get("/v1/models/no-such-model")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]
    assert client.get(f"/v1/models/{name}/versions/2").status_code == 404
    assert client.get("/v1/models").status_code == 400


def test_metadata_lists_signatures_as_tf_serving_does(client, name):
    response = client.get(f"/v1/models/{name}/metadata")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"] == {"name": name, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify_wav", "window_features", "metadata"} <= set(signatures)
    classify = signatures["classify_wav"]
    assert classify["method_name"] == "tensorflow/serving/predict"
    assert classify["inputs"]["wav_bytes"]["dtype"] == "DT_STRING"
    assert classify["inputs"]["wav_bytes"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert classify["outputs"]["female_probability"]["dtype"] == "DT_FLOAT"
    assert classify["outputs"]["error"]["dtype"] == "DT_STRING"
    assert classify["outputs"]["window_logits"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""}, {"size": "-1", "name": ""}]
    waveform = signatures["serving_default"]["inputs"]["waveform"]
    assert waveform["dtype"] == "DT_FLOAT" and len(waveform["tensor_shape"]["dim"]) == 2
    assert client.get(f"/v1/models/{name}/versions/1/metadata").json() == body
    assert client.get(f"/v1/models/{name}/versions/3/metadata").status_code == 404


# --- predict ----------------------------------------------------------------------------------


def test_row_format_equals_the_saved_model_and_predict(client, name, loaded, wavs, tmp_path):
    response = predict(client, name, {"signature_name": "classify_wav",
                                      "instances": [{"wav_bytes": b64(w)} for w in wavs]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(wavs)
    outputs = direct(loaded, wavs)
    assert set(predictions[0]) == set(outputs)
    for row, prediction in enumerate(predictions):
        assert_row_matches(prediction, outputs, row)
    # What `predict` (through serving.classify_files) reports for the same files.
    files = []
    for index, data in enumerate(wavs):
        files.append(tmp_path / f"{index}.wav")
        files[-1].write_bytes(data)
    for prediction, result in zip(predictions, serving.classify_files(loaded, files)):
        assert prediction["label"] == result.label
        assert abs(prediction["female_probability"] - result.female_probability) <= ATOL
        assert abs(prediction["duration_seconds"] - result.duration_seconds) <= ATOL
        windows = prediction["window_count"]
        np.testing.assert_allclose(1 / (1 + np.exp(-np.array(prediction["window_logits"]
                                                              [:windows]))),
                                   result.window_probabilities, atol=ATOL, rtol=0)
        assert prediction["window_sounding"][:windows] == result.window_sounding
        assert prediction["windows_disagree"] == result.windows_disagree


def test_single_input_instances_may_be_bare_values(client, name, loaded, wavs):
    named = predict(client, name, {"signature_name": "classify_wav",
                                   "instances": [{"wav_bytes": b64(w)} for w in wavs[:2]]})
    bare = predict(client, name, {"signature_name": "classify_wav",
                                  "instances": [b64(w) for w in wavs[:2]]})
    assert bare.status_code == 200, bare.text
    assert bare.json() == named.json()


def test_columnar_format(client, name, loaded, wavs):
    response = predict(client, name, {"signature_name": "classify_wav",
                                      "inputs": {"wav_bytes": [b64(w) for w in wavs]}})
    assert response.status_code == 200, response.text
    outputs_json = response.json()["outputs"]
    outputs = direct(loaded, wavs)
    assert set(outputs_json) == set(outputs)
    for key, value in outputs.items():
        if value.dtype == object:
            assert outputs_json[key] == [v.decode() for v in value]
        elif value.dtype == bool:
            assert outputs_json[key] == value.tolist()
        else:
            np.testing.assert_allclose(outputs_json[key], value, atol=ATOL, rtol=0)
    # A single input may be given bare, as TF Serving allows.
    bare = predict(client, name, {"signature_name": "classify_wav",
                                  "inputs": [b64(w) for w in wavs]})
    assert bare.json() == response.json()


def test_serving_default_takes_waveforms(client, name, loaded):
    waveforms = np.stack([voice(1.5, "female", 7), voice(1.5, "male", 8)]).astype(np.float32)
    expected = {key: value.numpy() for key, value in
                loaded.module.signatures["serving_default"](waveform=tf.constant(waveforms))
                .items()}
    # No signature_name: serving_default, as in TF Serving.
    rows = predict(client, name, {"instances": waveforms.tolist()})
    assert rows.status_code == 200, rows.text
    columns = predict(client, name, {"signature_name": "serving_default",
                                     "inputs": {"waveform": waveforms.tolist()}})
    assert columns.status_code == 200, columns.text
    predictions, outputs = rows.json()["predictions"], columns.json()["outputs"]
    for row in range(2):
        np.testing.assert_allclose(predictions[row]["female_probability"],
                                   expected["female_probability"][row], atol=ATOL, rtol=0)
        np.testing.assert_allclose(predictions[row]["window_logits"],
                                   expected["window_logits"][row], atol=ATOL, rtol=0)
        assert predictions[row]["label"] == expected["label"][row].decode()
    np.testing.assert_allclose(outputs["logits"], expected["logits"], atol=ATOL, rtol=0)


def test_scalar_outputs_in_columnar_format(client, name, loaded):
    response = predict(client, name, {"signature_name": "metadata", "inputs": {}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["sample_rate"] == RATE
    assert outputs["clip_samples"] == loaded.clip_samples
    assert json.loads(outputs["config_json"]) == loaded.config


def test_float_outputs_written_in_shortest_form():
    text = tfserving_json.predict_response_json(
        {"p": np.array([0.2, 1.0, np.nan, -np.inf], np.float32)}, row_format=True)
    assert text == '{"predictions": [0.2, 1.0, NaN, -Infinity]}'
    text = tfserving_json.predict_response_json(
        {"a": np.array([b"x", b"\xff"], object), "b_bytes": np.array([b"x", b"y"], object)},
        row_format=False)
    assert json.loads(text) == {"outputs": {"a": ["x", {"b64": "/w=="}],
                                            "b_bytes": [{"b64": "eA=="}, {"b64": "eQ=="}]}}


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_version_and_signature(client, name, wavs):
    body = {"signature_name": "classify_wav", "instances": [b64(wavs[0])]}
    unknown = client.post("/v1/models/nope:predict", json=body)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Servable not found for request: Latest(nope)"}
    version = client.post(f"/v1/models/{name}/versions/9:predict", json=body)
    assert version.status_code == 404 and "Specific" in version.json()["error"]
    assert client.post(f"/v1/models/{name}/versions/1:predict", json=body).status_code == 200
    signature = predict(client, name, {**body, "signature_name": "classify_mp3"})
    assert signature.status_code == 400
    assert 'Serving signature name: "classify_mp3" not found' in signature.json()["error"]
    assert client.post(f"/v1/models/{name}:classify", json=body).status_code == 400


@pytest.mark.parametrize("body, message", [
    (b"{", "JSON Parse error"),
    (b"\xff\xfe", "JSON Parse error"),
    (b"[" * 100_000, "JSON Parse error"),
    (b"[1, 2]", "JSON object"),
    (b'{"signature_name": "classify_wav"}', "Missing 'inputs' or 'instances'"),
    (b'{"instances": [], "inputs": []}', "only one of"),
    (b'{"signature_name": 3, "instances": [1]}', "signature_name"),
    (b'{"signature_name": "classify_wav", "instances": [{"b64": "not base64!"}]}',
     "base64"),
    (b'{"signature_name": "classify_wav", "instances": [{"b64": 12}]}', "base64"),
    (b'{"signature_name": "classify_wav", "instances": [{"wav": {"b64": "AA=="}}]}',
     "named input"),
    (b'{"signature_name": "classify_wav", "instances": [7]}', "DT_STRING"),
    (b'{"instances": [[0.1, 0.2], [0.3]]}', "same shape"),
    (b'{"instances": [["a", "b"]]}', "expected numbers"),
    (b'{"instances": [0.1, 0.2]}', "shape"),
])
def test_malformed_requests_get_400_with_a_message(client, name, body, message):
    response = client.post(f"/v1/models/{name}:predict", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_bad_files_get_their_own_error_and_the_rest_are_scored(client, name, loaded, wavs):
    batch = [wavs[0], helpers.CORRUPT_WAV, b"", b"RIFF\xff\xff\xff\x7fWAVE", wavs[3],
             wavfiles.riff(wavfiles.chunk(b"fmt ", wavfiles.fmt_payload(rate=8000)),
                           wavfiles.chunk(b"data", b"\x01\x00" * 40_000)
                           [:8] + b"\x01\x00" * 10)]
    response = predict(client, name, {"signature_name": "classify_wav",
                                      "instances": [b64(w) for w in batch]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    outputs = direct(loaded, batch)
    for row, prediction in enumerate(predictions):
        assert_row_matches(prediction, outputs, row)
    assert [bool(p["error"]) for p in predictions] == [False, True, True, True, False, True]
    assert "truncated" in predictions[5]["error"]
    # The good files score as they do alone.
    alone = direct(loaded, [wavs[0]])
    assert abs(predictions[0]["female_probability"] - alone["female_probability"][0]) <= ATOL
    assert client.get(f"/v1/models/{name}").status_code == 200


def test_mangled_headers_never_take_the_server_down(client, name, loaded, wavs):
    """Random bytes over a good file's header, 24 ways in one request: every row is scored or
    gets its error, as the SavedModel says, and the server keeps answering."""
    rng = np.random.default_rng(11)
    good = wavs[0]
    mangled = []
    for _ in range(24):
        data = bytearray(good)
        for position in rng.integers(0, 44, size=rng.integers(1, 6)):
            data[position] = int(rng.integers(0, 256))
        mangled.append(bytes(data))
    response = predict(client, name, {"signature_name": "classify_wav",
                                      "instances": [b64(w) for w in mangled]})
    assert response.status_code == 200, response.text
    outputs = direct(loaded, mangled)
    for row, prediction in enumerate(response.json()["predictions"]):
        if prediction["error"].startswith("recording too long"):
            continue  # refused by this server before decoding
        assert_row_matches(prediction, outputs, row)
    assert client.get(f"/v1/models/{name}").status_code == 200


@pytest.fixture(scope="module")
def strict_url(servable):
    context, _ = start(servable, max_request_bytes=400_000, max_file_bytes=150_000,
                       max_duration_seconds=3.0, max_request_audio_seconds=10.0)
    with context as url:
        yield url


def test_body_and_file_size_limits(strict_url, name, wavs):
    with httpx.Client(base_url=strict_url, timeout=60) as http:
        big = bytes(500_000)
        response = http.post(f"/v1/models/{name}:predict", content=big,
                             headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert "400,000 bytes" in response.json()["error"]
        # Streamed without a Content-Length: still cut off at the limit.
        response = http.post(f"/v1/models/{name}:predict",
                             content=iter([b'{"instances": ['] + [b" " * 50_000] * 10))
        assert response.status_code == 413
        # Under the body limit, over the per-file limit.
        response = predict(http, name, {"signature_name": "classify_wav",
                                        "instances": [b64(bytes(200_000))]})
        assert response.status_code == 413
        assert "wav_bytes[0]" in response.json()["error"]
        assert "150,000 bytes" in response.json()["error"]


def test_too_long_recordings(strict_url, name, loaded, wavs):
    long = wav_bytes(voice(5.0, "male", 9)[::2], rate=8000)  # 80 kB, 5 s
    medium = wav_bytes(voice(2.5, "male", 10)[::2], rate=8000)  # 40 kB, 2.5 s
    with httpx.Client(base_url=strict_url, timeout=60) as http:
        response = predict(http, name, {"signature_name": "classify_wav",
                                        "instances": [b64(long), b64(wavs[0])]})
        assert response.status_code == 200, response.text
        refused, scored = response.json()["predictions"]
        assert refused["error"] == "recording too long: 5.0 s (this server accepts at most 3 s)"
        assert refused["label"] == ""
        assert_row_matches(scored, direct(loaded, [b"", wavs[0]]), 1)
        # window_features has no error output: the whole request is refused.
        response = predict(http, name, {"signature_name": "window_features",
                                        "instances": [b64(long)]})
        assert response.status_code == 413 and "too long" in response.json()["error"]
        # Waveforms: by their length.
        response = predict(http, name, {"instances": [[0.0] * (4 * RATE)]})
        assert response.status_code == 413 and "3 s" in response.json()["error"]
        # Many recordings padded to the longest exceed the request's audio.
        response = predict(http, name, {"signature_name": "classify_wav",
                                        "instances": [b64(medium)] * 5})
        assert response.status_code == 413 and "padded" in response.json()["error"]


def test_wav_layout_agrees_with_soundfile(tmp_path, wavs):
    x = voice(1.3, "female", 5)
    for subtype, rate, channels in [("PCM_16", 16000, 1), ("PCM_24", 44100, 2),
                                    ("FLOAT", 8000, 1), ("PCM_U8", 22050, 3)]:
        path = tmp_path / f"{subtype}.wav"
        wavfiles.write_wav(path, np.stack([x] * channels, axis=1), rate, subtype)
        layout = layout_of_bytes(path.read_bytes())
        info = sf.info(str(path))
        assert abs(layout.seconds - info.frames / info.samplerate) < 1e-9
        assert layout.frames == info.frames and layout.channels == channels
    assert layout_of_bytes(b"") is None
    assert layout_of_bytes(helpers.CORRUPT_WAV) is None
    # A header claiming more data than the file holds costs nothing: the decoder refuses it.
    lying = wavfiles.riff(wavfiles.chunk(b"fmt ", wavfiles.fmt_payload()),
                          b"data" + (2**31).to_bytes(4, "little") + bytes(100))
    assert layout_of_bytes(lying) is None


def test_request_timeout_answers_504(servable, name, wavs):
    context, app = start(servable, request_timeout=0.2)
    api = app.state.api
    model_call = api.batcher._call

    def slow_call(signature, inputs):
        time.sleep(1.0)
        return model_call(signature, inputs)

    api.batcher._call = slow_call
    with context as url, httpx.Client(base_url=url, timeout=60) as http:
        response = predict(http, name, {"signature_name": "classify_wav",
                                        "instances": [b64(wavs[0])]})
        assert response.status_code == 504
        assert "timed out" in response.json()["error"]
        assert http.get(f"/v1/models/{name}").status_code == 200


# --- CORS, page -------------------------------------------------------------------------------


def test_cors_off_by_default_on_with_flag(client, servable, name):
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get(f"/v1/models/{name}",
                                                           headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    response = client.options(f"/v1/models/{name}:predict", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    context, _ = start(servable, cors_origins=("https://elsewhere.example",))
    with context as url, httpx.Client(base_url=url) as http:
        response = http.get(f"/v1/models/{name}", headers=origin)
        assert response.headers["access-control-allow-origin"] == "https://elsewhere.example"
        response = http.options(f"/v1/models/{name}:predict", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://elsewhere.example"
        other = http.get(f"/v1/models/{name}", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# An XML namespace name: an identifier in the page's script, never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def test_page_and_assets_are_served_and_self_contained(client, name):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<meta name="viewport"' in html and 'aria-live="polite"' in html
    assert '<input type="file"' in html and '<label for="file-input"' in html
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/app.js", "/static/style.css"} <= set(assets)
    texts = {"/": html}
    for path in assets + ["/static/recorder-worklet.js"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] in ("text/javascript",
                                                                  "text/css")
        texts[path] = response.text
    for path, text in texts.items():
        urls = re.findall(r"https?://[^\s\"'`)]+", text.replace(SVG_NAMESPACE, ""))
        assert urls == [], f"{path} refers to {urls}"
    assert "classify_wav" in texts["/static/app.js"]
    assert client.get("/static/../serve.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404
    config = client.get("/app/config.json").json()
    assert config["model_name"] == name
    assert config["limits"] and all(limit["headline"] for limit in config["limits"])


def test_model_card_limits_become_one_line_headlines():
    card = ("# Card\n\n## Limits\n\n- **Short one.** Longer text **bold**.\n- Plain line\n\n"
            "## Next\n")
    assert rest_api.card_limits(card) == [
        {"headline": "Short one.", "text": "Longer text bold."},
        {"headline": "Plain line", "text": ""}]
    assert len(rest_api.card_limits("")) >= 3


# --- batching ---------------------------------------------------------------------------------


def concurrent_predictions(url: str, name: str, files: list[bytes]) -> list[dict]:
    """One request per file, all at once; their predictions in order."""
    barrier = threading.Barrier(len(files))

    def one(data):
        with httpx.Client(base_url=url, timeout=60) as http:
            barrier.wait()
            response = predict(http, name, {"signature_name": "classify_wav",
                                            "instances": [b64(data)]})
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]

    with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
        return list(pool.map(one, files))


def test_concurrent_requests_share_model_calls_and_match_unbatched(servable, name, wavs):
    files = [wavs[i % len(wavs)] for i in range(8)]
    batched_context, batched_app = start(servable, max_batch_size=4, batch_timeout_ms=500)
    plain_context, plain_app = start(servable, batching=False)
    with batched_context as batched_url, plain_context as plain_url:
        batched = concurrent_predictions(batched_url, name, files)
        plain = concurrent_predictions(plain_url, name, files)
        stats = httpx.get(f"{batched_url}/internal/stats").json()
        plain_stats = httpx.get(f"{plain_url}/internal/stats").json()
    assert stats["requests"] == 8 and stats["rows"] == 8
    assert 2 <= stats["model_calls"] < 8, stats
    assert stats["largest_batch"] <= 4
    assert plain_stats["model_calls"] == 8
    for one, other in zip(batched, plain):
        assert one["window_count"] == other["window_count"]
        # Trimmed to the request's own windows, whatever it was batched with.
        assert len(one["window_logits"]) == len(other["window_logits"]) == one["window_count"]
        assert one["label"] == other["label"]
        np.testing.assert_allclose(one["female_probability"], other["female_probability"],
                                   atol=ATOL, rtol=0)
        np.testing.assert_allclose(one["window_logits"], other["window_logits"], atol=ATOL,
                                   rtol=0)


def test_batcher_bounds_and_splits():
    calls = []

    def model(signature, inputs):
        calls.append(len(inputs["x"]))
        widths = inputs["x"][:, 0].astype(np.int32)
        return {"window_count": widths, "y": np.repeat(widths[:, None], widths.max(), axis=1),
                "z": inputs["x"][:, 0] * 2}

    async def scenario():
        batcher = batching.Batcher(model, max_batch_size=3, batch_timeout=0.2,
                                   max_batch_cost=(10.0,))
        requests = [batcher.submit("s", {"x": np.array([[w]], np.float32)}, row_cost=(w,))
                    for w in (1, 2, 3, 1, 9)]
        results = await asyncio.gather(*requests)
        batcher.close()
        return results

    results = asyncio.run(scenario())
    # 3 rows at most; rows x widest cost at most 10 (3 x 3 = 9 fits, 2 x 9 does not).
    assert calls == [3, 1, 1]
    for width, result in zip((1, 2, 3, 1, 9), results):
        assert result["y"].shape == (1, width) and result["z"][0] == 2 * width


def test_split_rows_trims_per_window_outputs():
    outputs = {"window_count": np.array([1, 3]), "w": np.arange(6).reshape(2, 3),
               "p": np.array([0.1, 0.2]), "f": np.zeros([2, 3, 4])}
    first = batching.split_rows(outputs, 0, 1)
    assert first["w"].tolist() == [[0]] and first["f"].shape == (1, 1, 4)
    assert batching.split_rows(outputs, 1, 2)["w"].tolist() == [[3, 4, 5]]


# --- the command line -------------------------------------------------------------------------


def test_help_explains_every_option():
    result = subprocess.run([helpers.PYTHON, "-m", "speakergender.serve", "--help"],
                            capture_output=True, text=True, env=helpers.python_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    for action in serve.build_parser()._actions:
        for option in action.option_strings:
            assert option in result.stdout
        assert action.help, action.dest
    options = serve.options_from_args(serve.build_parser().parse_args(
        ["m", "--no-batching", "--max-file-mb", "2", "--cors-origin", "https://a.example"]))
    assert dataclasses.asdict(options) == {**dataclasses.asdict(serve.ServerOptions()),
                                           "batching": False, "max_file_bytes": 2 * (1 << 20),
                                           "cors_origins": ("https://a.example",)}


def test_command_line_server(model_dir, wavs):
    """python -m speakergender.serve: serves the model under --model-name on the given port."""
    port = free_port()
    process = subprocess.Popen(
        [helpers.PYTHON, "-m", "speakergender.serve", str(model_dir), "--port", str(port),
         "--model-name", "voices", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=helpers.python_env(),
        cwd=helpers.REPO_ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/models/voices", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        response = httpx.post(f"{url}/v1/models/voices:predict", timeout=60, json={
            "signature_name": "classify_wav", "instances": [{"wav_bytes": b64(wavs[0])}]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] in ("female", "male")
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
