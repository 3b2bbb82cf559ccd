"""The web app and a REST API in TensorFlow Serving's shape, as one Starlette application.

`create_app(model, options)` serves:

- `GET /v1/models/NAME[/versions/V]`: the model's version status;
- `GET /v1/models/NAME[/versions/V]/metadata`: its signatures (SignatureDef JSON);
- `POST /v1/models/NAME[/versions/V]:predict`: any signature, in the row ("instances") or
  columnar ("inputs") format, answered as TF Serving answers;
- `/`: the web page (package data under `speakergender/web/`), which calls the same
  `:predict` endpoint; `/app/config.json`: what the page shows besides results;
- `/internal/stats`: batching counters.

A client written against TF Serving's REST API works unchanged against this server, and the
other way round. Requests are bounded (body, file and audio sizes, time); a file that cannot be
decoded gets its own error in the `error` output while the rest of its request is scored.
Nothing a client sends is written to disk or read as a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from speakergender import batching, model_card, serving
from speakergender.server_options import ServerOptions
from speakergender.wav_layout import layout_of_bytes
from speakergender.tfserving_json import (DEFAULT_SIGNATURE, ApiError, PredictRequest,
                                          batch_rows, input_location, parse_predict_request,
                                          predict_response_json, signature_defs, spec_info)

log = logging.getLogger("speakergender.serve")

WAV_INPUT = "wav_bytes"
WAVEFORM_INPUT = "waveform"
ERROR_OUTPUT = "error"

# Request bodies and outputs up to this size are parsed / formatted on the event loop (about a
# millisecond of work); larger ones in a worker thread.
INLINE_WORK_BYTES = 256 * 1024
# The page and its assets: file name -> content type.
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "recorder-worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# --- the model --------------------------------------------------------------------------------


class Servable:
    """A loaded SavedModel as the REST API sees it: name, version, signatures, a call.

    Args:
      model: from `serving.load_model`.
      name: the name clients address it by (default: its folder's name).
      warm_up: run `classify_wav` and `serving_default` once now, so the first client does
        not wait for TensorFlow's first-call work.
    """

    def __init__(self, model: serving.LoadedModel, name: str | None = None,
                 warm_up: bool = True):
        self.model = model
        self.name = name or model.name
        self.version = model.path.name if model.path.name.isdigit() else "1"
        self.signatures = {key: fn for key, fn in model.module.signatures.items()}
        self.inputs = {key: {name: spec_info(spec) for name, spec in
                             fn.structured_input_signature[1].items()}
                       for key, fn in self.signatures.items()}
        self.outputs = {key: {name: spec_info(spec) for name, spec in fn.structured_outputs.items()}
                        for key, fn in self.signatures.items()}
        self.signature_defs = signature_defs(model.path)
        self.threshold = float(model.module.signatures["metadata"]()["threshold"].numpy()) \
            if "metadata" in self.signatures else 0.5
        if warm_up:
            self.warm_up()

    def __call__(self, signature: str, inputs: Mapping[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
        """Runs a signature (blocking: call it from a worker thread)."""
        outputs = self.signatures[signature](**{name: tf.constant(value)
                                                for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    def warm_up(self) -> None:
        rate = self.model.sample_rate
        if "classify_wav" in self.signatures:
            self("classify_wav", {WAV_INPUT: np.array([silent_wav(rate, rate // 4)],
                                                      dtype=object)})
        if DEFAULT_SIGNATURE in self.signatures and \
                set(self.inputs[DEFAULT_SIGNATURE]) == {WAVEFORM_INPUT}:
            self(DEFAULT_SIGNATURE, {WAVEFORM_INPUT: np.zeros([1, rate // 4], np.float32)})


def silent_wav(rate: int, frames: int) -> bytes:
    """A mono 16-bit PCM WAV of `frames` zero samples."""
    data = bytes(2 * frames)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16,
                         1, 1, rate, rate * 2, 2, 16, b"data", len(data))
    return header + data


# --- limits -----------------------------------------------------------------------------------


def check_limits(request: PredictRequest, servable: Servable, options: ServerOptions) -> None:
    """Sizes and durations against the server's limits; costs for batching."""
    rows = batch_rows(request.inputs)
    max_bytes, max_seconds = 0.0, 0.0
    refusable = ERROR_OUTPUT in servable.outputs[request.signature]
    for name, array in request.inputs.items():
        if array.dtype == object:
            for index, item in np.ndenumerate(array):
                if len(item) > options.max_file_bytes:
                    raise ApiError(413, f"{input_location(name, index)}: {len(item):,} bytes; this "
                                        f"server accepts files of at most "
                                        f"{options.max_file_bytes:,} bytes")
                max_bytes = max(max_bytes, len(item))
            if name == WAV_INPUT and array.ndim == 1:
                for row, item in enumerate(array):
                    header = layout_of_bytes(item)
                    if header is None:
                        continue  # the model reports what is wrong with it
                    if header.seconds > options.max_duration_seconds:
                        message = (f"recording too long: {header.seconds:.1f} s (this server "
                                   f"accepts at most {options.max_duration_seconds:g} s)")
                        if not refusable:
                            raise ApiError(413, f"{input_location(name, (row,))}: {message}")
                        request.refused[row] = message
                        array[row] = b""
                        continue
                    max_seconds = max(max_seconds, header.seconds)
        elif name == WAVEFORM_INPUT and array.ndim == 2:
            seconds = array.shape[1] / servable.model.sample_rate
            if seconds > options.max_duration_seconds:
                raise ApiError(413, f"input {name!r}: {seconds:.1f} s of audio per row; this "
                                    f"server accepts at most {options.max_duration_seconds:g} "
                                    "s")
            max_seconds = max(max_seconds, seconds)
            max_bytes = max(max_bytes, array[0].nbytes if len(array) else 0)
    if rows * max_seconds > options.max_request_audio_seconds:
        raise ApiError(413, f"request too large: {rows} recordings padded to the longest "
                            f"({max_seconds:.1f} s) make {rows * max_seconds:.0f} s of audio; "
                            f"this server scores at most {options.max_request_audio_seconds:g} "
                            "s per request. Send long recordings in requests of their own.")
    if rows * max_bytes > options.max_request_padded_bytes:
        raise ApiError(413, f"request too large: {rows} files padded to the largest "
                            f"({max_bytes:,.0f} bytes) make {rows * max_bytes:,.0f} bytes; this "
                            f"server takes at most {options.max_request_padded_bytes:,} per "
                            "request. Send large files in requests of their own.")
    request.row_cost = (max_bytes, max_seconds)


# --- the model card's limits ------------------------------------------------------------------


def card_limits(card: str) -> list[dict[str, str]]:
    """The "## Limits" bullets of a model card: [{"headline", "text"}], Markdown stripped.

    A card without that section (models exported before model cards) gets the limits
    speakergender writes into every card.
    """
    bullets = []
    section = re.search(r"^## Limits\s*$(.*?)(?=^## |\Z)", card or "", re.M | re.S)
    if section:
        bullets = [line[2:].strip() for line in section.group(1).splitlines()
                   if line.startswith("- ")]
    if not bullets:
        bullets = list(model_card.LIMITS)
    limits = []
    for bullet in bullets:
        match = re.match(r"\*\*(.+?)\*\*\s*(.*)", bullet)
        headline, rest = (match.group(1), match.group(2)) if match else (bullet, "")
        limits.append({"headline": headline.strip(), "text": rest.replace("**", "").strip()})
    return limits


# --- the application --------------------------------------------------------------------------


PATH_PATTERN = re.compile(
    r"(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[A-Za-z]+)|/(?P<sub>metadata))?")


class RestApi:
    """The application's state and handlers."""

    def __init__(self, servable: Servable, options: ServerOptions):
        self.servable = servable
        self.options = options
        self.batcher = batching.Batcher(
            servable, max_batch_size=options.max_batch_size,
            batch_timeout=options.batch_timeout_ms / 1000.0,
            max_batch_cost=(options.max_request_padded_bytes, options.max_request_audio_seconds),
            num_threads=options.num_batch_threads, enabled=options.batching,
            max_queued_rows=options.max_queued_rows)
        self._parsing: asyncio.Semaphore | None = None
        self._web = {name: (importlib.resources.files("speakergender") / "web" / name)
                     .read_bytes() for name in WEB_FILES}
        self._app_config = json.dumps({
            "model_name": servable.name,
            "version": servable.version,
            "threshold": servable.threshold,
            "sample_rate": servable.model.sample_rate,
            "window_seconds": servable.model.clip_samples / servable.model.sample_rate,
            "hop_seconds": servable.model.window_hop_seconds,
            "limits": card_limits(servable.model.model_card),
            "card_has_limits": bool(re.search(r"^## Limits", servable.model.model_card or "",
                                              re.M)),
            "max_file_bytes": options.max_file_bytes,
            "max_duration_seconds": options.max_duration_seconds,
        })

    # Routing.

    async def models(self, request: Request) -> Response:
        """Everything under /v1/models, parsed as TF Serving parses it."""
        path = request.path_params.get("path", "")
        match = PATH_PATTERN.fullmatch(path)
        method = request.method
        try:
            if not path:
                raise ApiError(400, "Missing model name in request.")
            if not match or (method == "POST") != bool(match["verb"]):
                raise ApiError(404, f"Malformed request: {method} {request.url.path}")
            name, version = match["name"], match["version"]
            if match["label"] is not None:
                raise ApiError(404, f"Unrecognized servable version label: {match['label']}")
            if version is not None and not version.isdigit():
                raise ApiError(400, f"Failed to convert version: {version} to numeric.")
            if method == "GET":
                self._find(name, version, status_request=match["sub"] is None)
                if match["sub"]:
                    return self._json(self.metadata())
                return self._json(self.status())
            self._find(name, version)
            verb = match["verb"].lower()
            if verb != "predict":
                raise ApiError(400 if verb in ("classify", "regress") else 404,
                               f"{verb} is not served here: this model's signatures are "
                               "predict signatures; POST ...:predict")
            try:
                return await asyncio.wait_for(self.predict(request),
                                              self.options.request_timeout)
            except TimeoutError:
                raise ApiError(504, f"request timed out after "
                                    f"{self.options.request_timeout:g} s") from None
        except ApiError as error:
            return self._json({"error": error.message}, error.status)
        except Exception as error:  # a bug or an exhausted resource: this request only
            log.exception("%s %s failed", method, request.url.path)
            return self._json({"error": f"internal error: {type(error).__name__}: {error}"},
                              500)

    def _find(self, name: str, version: str | None, status_request: bool = False) -> None:
        if name != self.servable.name:
            raise ApiError(404, f"Could not find any versions of model {name}" if status_request
                           else f"Servable not found for request: Latest({name})")
        if version is not None and int(version) != int(self.servable.version):
            raise ApiError(404, f"Could not find version {version} of model {name}"
                           if status_request
                           else f"Servable not found for request: Specific({name}, {version})")

    def status(self) -> dict:
        return {"model_version_status": [{
            "version": self.servable.version, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(self) -> dict:
        return {"model_spec": {"name": self.servable.name, "signature_name": "",
                               "version": self.servable.version},
                "metadata": {"signature_def": {
                    "signature_def": self.servable.signature_defs}}}

    async def predict(self, request: Request) -> Response:
        body = await self._read_body(request)
        parsed = await self._off_loop(len(body), self._parse, body)
        del body
        if not parsed.inputs:
            outputs = await asyncio.to_thread(self.servable, parsed.signature, {})
        else:
            try:
                outputs = await self.batcher.submit(parsed.signature, parsed.inputs,
                                                    parsed.row_cost)
            except batching.QueueFullError as error:
                raise ApiError(503, str(error)) from None
            except (tf.errors.InvalidArgumentError, ValueError) as error:
                raise ApiError(400, _tf_message(error)) from None
            except tf.errors.OpError as error:
                log.exception("model call failed")
                raise ApiError(500, _tf_message(error)) from None
        if parsed.refused:
            outputs = dict(outputs, **{ERROR_OUTPUT: outputs[ERROR_OUTPUT].copy()})
            for row, message in parsed.refused.items():
                outputs[ERROR_OUTPUT][row] = message.encode()
        text = await self._off_loop(sum(map(_content_bytes, outputs.values())),
                                    predict_response_json, outputs, parsed.row_format)
        return Response(text, media_type="application/json")

    def _parse(self, body: bytes) -> PredictRequest:
        parsed = parse_predict_request(body, self.servable.inputs)
        check_limits(parsed, self.servable, self.options)
        return parsed

    async def _read_body(self, request: Request) -> bytes:
        limit = self.options.max_request_bytes
        declared = request.headers.get("content-length", "")
        too_large = ApiError(413, f"request body larger than this server accepts "
                                  f"({limit:,} bytes)")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def _off_loop(self, size: int, function, *args):
        """Runs CPU-bound request work (JSON, base64) on `size` bytes: in place when small,
        else in a worker thread, a few at a time.

        A thread hop costs more than parsing a one-clip request (at 32 concurrent clients of
        `benchmarks/serve_load.py`, 258 requests/s with every request's work in threads
        against 282 with this); a large body would hold the event loop, and so every other
        client, for as long as it takes to parse.
        """
        if size <= INLINE_WORK_BYTES:
            return function(*args)
        if self._parsing is None:
            self._parsing = asyncio.Semaphore(self.options.max_parallel_parsing)
        async with self._parsing:
            return await asyncio.to_thread(function, *args)

    @staticmethod
    def _json(content: Any, status: int = 200) -> Response:
        return JSONResponse(content, status_code=status)

    # The web page.

    async def page(self, request: Request) -> Response:
        return self._web_file("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in WEB_FILES or name == "index.html":
            return self._json({"error": f"no such file: {name}"}, 404)
        return self._web_file(name)

    def _web_file(self, name: str) -> Response:
        return Response(self._web[name], media_type=WEB_FILES[name], headers=SECURITY_HEADERS)

    async def app_config(self, request: Request) -> Response:
        return Response(self._app_config, media_type="application/json")

    async def stats(self, request: Request) -> Response:
        return self._json({"batching": self.options.batching, **self.batcher.stats.as_dict()})


def _content_bytes(value) -> int:
    """Bytes an output holds, strings' contents included (an object array's `nbytes` counts
    only its pointers)."""
    array = np.asarray(value)
    if array.dtype == object:
        return sum(len(item) for item in array.flat)
    return array.nbytes


def _tf_message(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def create_app(model: serving.LoadedModel | Servable, options: ServerOptions | None = None
               ) -> Starlette:
    """The Starlette application serving `model`; `app.state.api` is its RestApi."""
    options = options or ServerOptions()
    servable = model if isinstance(model, Servable) else Servable(model, options.model_name)
    api = RestApi(servable, options)
    routes = [
        Route("/", api.page, methods=["GET"]),
        Route("/static/{name}", api.static, methods=["GET"]),
        Route("/app/config.json", api.app_config, methods=["GET"]),
        Route("/internal/stats", api.stats, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{path:path}", api.models, methods=["GET", "POST"]),
    ]
    middleware = []
    if options.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(options.cors_origins),
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Content-Type"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"Malformed request: {request.method} {request.url.path}"},
                            status_code=getattr(exc, "status_code", 404))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        api.batcher.close()

    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
    app.state.api = api
    return app

