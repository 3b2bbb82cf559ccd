"""python -m speakergender.serve MODEL: a web app and a TF Serving-compatible REST API.

Serves an exported SavedModel over HTTP (Starlette on uvicorn): a page at / to drop files on or
record from the microphone, and TensorFlow Serving's REST API (/v1/models/NAME...), with
concurrent requests batched into shared model calls.
"""

from __future__ import annotations

import argparse
import sys

from speakergender.server_options import MB, ServerOptions

DEFAULTS = ServerOptions()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.serve",
        description=(
            "Serve an exported speakergender SavedModel: a web page at / (drop or choose audio "
            "files, or record from the microphone) and a REST API in TensorFlow Serving's "
            "shape at /v1/models/NAME (status, /metadata, :predict in the row and columnar "
            "formats), so a client written for TF Serving works unchanged. Concurrent "
            "requests are scored together in batched model calls. Listens on loopback only "
            "unless --host says otherwise; nothing clients send is written to disk."),
        epilog=(
            "example: python -m speakergender.serve saved_models/scratch-log-mel, then open "
            "http://127.0.0.1:8501/ or POST to "
            "http://127.0.0.1:8501/v1/models/scratch-log-mel:predict"),
    )
    parser.add_argument("model", help="SavedModel folder, model folder with numbered versions "
                                      "(the latest is served), or a run name under "
                                      "saved_models/")
    parser.add_argument("--model-name", default=None,
                        help="the NAME in /v1/models/NAME (default: the model folder's name)")
    network = parser.add_argument_group("network")
    network.add_argument("--host", default="127.0.0.1",
                         help="address to listen on; 0.0.0.0 exposes the server to the "
                              "network, which it does not authenticate: put a proxy that "
                              "does in front (default: %(default)s)")
    network.add_argument("--port", type=int, default=8501,
                         help="TCP port, 8501 as TF Serving's REST port; 0 picks a free one "
                              "(default: %(default)s)")
    network.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                         help="let pages from this origin (e.g. https://example.org) call the "
                              "API from a browser; repeat for several (default: no CORS "
                              "headers, so only the server's own page can)")
    network.add_argument("--max-connections", type=int, default=256,
                         help="concurrent connections beyond which new ones are answered 503 "
                              "(default: %(default)s)")
    batch = parser.add_argument_group("batching (as TF Serving's --enable_batching)")
    batch.add_argument("--no-batching", dest="batching", action="store_false",
                       help="score every request in a model call of its own (default: "
                            "concurrent requests share model calls)")
    batch.add_argument("--max-batch-size", type=int, default=DEFAULTS.max_batch_size,
                       help="most recordings scored in one model call (default: %(default)s)")
    batch.add_argument("--batch-timeout-ms", type=float, default=DEFAULTS.batch_timeout_ms,
                       help="how long a batch waits for more requests after its first "
                            "arrives, in milliseconds; with 0 it leaves as soon as the model "
                            "is free, holding every request that arrived while the model was "
                            "busy (default: %(default)s)")
    batch.add_argument("--num-batch-threads", type=int, default=DEFAULTS.num_batch_threads,
                       help="model calls in flight at once, with or without batching "
                            "(default: %(default)s)")
    batch.add_argument("--max-queued", type=int, default=DEFAULTS.max_queued_rows,
                       help="recordings waiting for the model beyond which requests are "
                            "answered 503 (default: %(default)s)")
    limits = parser.add_argument_group("limits (a request over one is refused with a message)")
    limits.add_argument("--max-request-mb", type=float, default=DEFAULTS.max_request_bytes / MB,
                        help="largest request body in MiB; base64 makes files a third larger; "
                             "413 (default: %(default)s)")
    limits.add_argument("--max-file-mb", type=float, default=DEFAULTS.max_file_bytes / MB,
                        help="largest single file in MiB; 413 (default: %(default)s)")
    limits.add_argument("--max-duration", type=float, default=DEFAULTS.max_duration_seconds,
                        metavar="SECONDS",
                        help="longest recording, read from its WAV header before decoding; a "
                             "longer one gets this as its error in the classify_wav 'error' "
                             "output while the rest of its request is scored "
                             "(default: %(default)s)")
    limits.add_argument("--max-request-audio", type=float,
                        default=DEFAULTS.max_request_audio_seconds, metavar="SECONDS",
                        help="most audio one request (and one model call) scores, counted as "
                             "the model pads it: recordings x the longest of them; 413 "
                             "(default: %(default)s)")
    limits.add_argument("--request-timeout", type=float, default=DEFAULTS.request_timeout,
                        metavar="SECONDS",
                        help="answer 504 when a request takes longer (default: %(default)s)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="server log level; access lines are logged at info "
                             "(default: %(default)s)")
    return parser


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        model_name=args.model_name, batching=args.batching,
        max_batch_size=args.max_batch_size, batch_timeout_ms=args.batch_timeout_ms,
        num_batch_threads=args.num_batch_threads, max_queued_rows=args.max_queued,
        max_request_bytes=int(args.max_request_mb * MB), max_file_bytes=int(args.max_file_mb * MB),
        max_duration_seconds=args.max_duration,
        max_request_audio_seconds=args.max_request_audio,
        request_timeout=args.request_timeout, cors_origins=tuple(args.cors_origin))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_batch_size", "num_batch_threads", "max_queued", "max_connections"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_request_mb", "max_file_mb", "max_duration", "max_request_audio",
                 "request_timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    # Imported late so --help is instant.
    import uvicorn

    from speakergender import rest_api, serving
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        model = serving.load_model(args.model)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app = rest_api.create_app(model, options_from_args(args))
    name = app.state.api.servable.name
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {name} (version {app.state.api.servable.version}) at "
          f"http://{shown_host}:{args.port}/ ; REST API at "
          f"http://{shown_host}:{args.port}/v1/models/{name}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=args.max_connections, server_header=False,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
