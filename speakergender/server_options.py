"""What `python -m speakergender.serve` configures: limits, batching, CORS.

Apart from the command line (which reads its defaults) and the application (which obeys it),
and free of TensorFlow, so `serve --help` answers at once.
"""

from __future__ import annotations

import dataclasses

MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """What `python -m speakergender.serve` configures (see its --help)."""

    model_name: str | None = None
    batching: bool = True
    max_batch_size: int = 32
    # 0: a batch leaves as soon as a model thread is free, with every request that arrived
    # while the model was busy (measured best on 2 CPUs at concurrency 1, 8 and 32).
    batch_timeout_ms: float = 0.0
    num_batch_threads: int = 1
    max_queued_rows: int = 1024
    max_request_bytes: int = 24 * MB
    max_file_bytes: int = 16 * MB
    max_duration_seconds: float = 120.0
    # Rows x the longest recording, per request and per model call: the padded audio a model
    # call scores (its memory grows with it, about 1.2 MB per second for the scratch CNN).
    max_request_audio_seconds: float = 600.0
    # Rows x the largest file's bytes, per request and per model call: the padded samples
    # a model call decodes.
    max_request_padded_bytes: int = 64 * MB
    request_timeout: float = 30.0
    cors_origins: tuple[str, ...] = ()
    # Concurrent JSON parsing and formatting jobs (worker threads; each holds a body).
    max_parallel_parsing: int = 4

