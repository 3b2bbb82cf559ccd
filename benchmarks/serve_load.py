"""Load test of `python -m speakergender.serve`: throughput and latency, batching on and off.

    python benchmarks/serve_load.py saved_models/scratch-log-mel [--requests 600] [--seconds 20]
    python benchmarks/serve_load.py saved_models/scratch-log-mel --memory-requests 10000

Starts the server as a subprocess on loopback (once with batching, once with --no-batching),
then sends one-second synthetic clips as classify_wav requests (row format, base64 WAV, one
clip per request) from client threads at concurrency 1, 8 and 32. Each setting is bounded by
--requests and --seconds, whichever comes first. Prints requests/s, p50 and p99 latency, errors
and the mean batch the server formed, side by side, and the batching speed-up at the highest
concurrency.

--memory-requests N instead sends N requests (concurrency 8, batching on) and prints the
server's resident memory (VmRSS from /proc/PID/status) once it is up, after the first requests
and at the end: growth over the run would be a leak.

The load generator runs on the same machine and takes CPU from the server: figures are for
this machine as a whole, not for the server alone.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import subprocess
import threading
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from speakergender import synthetic  # noqa: E402

RATE = 16000


def clip_bodies(count: int) -> list[bytes]:
    """`count` request bodies, each one different one-second synthetic voice."""
    rng = np.random.default_rng(0)
    bodies = []
    for index in range(count):
        voice = synthetic.speaker_voice("female" if index % 2 else "male", rng)
        samples = synthetic.utterance(voice, 1.0, RATE, rng)
        buffer = io.BytesIO()
        sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        bodies.append(json.dumps({"signature_name": "classify_wav",
                                  "instances": [{"wav_bytes": {"b64": encoded}}]}).encode())
    return bodies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m speakergender.serve MODEL ...` on a free loopback port."""

    def __init__(self, model: str, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "speakergender.serve", model, "--port", str(self.port),
             "--log-level", "warning", *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def wait(self, name: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models/{name}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not come up")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/internal/stats", timeout=10).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


def load(url: str, name: str, bodies: list[bytes], concurrency: int, requests: int,
         seconds: float) -> dict:
    """`concurrency` client threads, each on its own keep-alive connection, sending requests
    until `requests` are sent or `seconds` pass.

    Threads with the standard library's http.client: the load generator shares the server's
    two CPUs, and this costs it the least per request (asyncio + httpx at concurrency 32 became
    the bottleneck itself, at about a third of these request rates).
    """
    host, port = url.removeprefix("http://").split(":")
    endpoint = f"/v1/models/{name}:predict"
    lock = threading.Lock()
    latencies, errors = [], []
    sent = 0
    ready = threading.Barrier(concurrency + 1)
    deadline = 0.0

    def take() -> bytes | None:
        nonlocal sent
        with lock:
            if sent >= requests or time.perf_counter() >= deadline:
                return None
            sent += 1
            return bodies[sent % len(bodies)]

    def worker():
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        # Opens the connection: not counted (steady state, not connection set-up).
        connection.request("GET", f"/v1/models/{name}")
        connection.getresponse().read()
        ready.wait()
        try:
            while (body := take()) is not None:
                start = time.perf_counter()
                try:
                    connection.request("POST", endpoint, body,
                                       {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    text = response.read()
                    ok = response.status == 200 and \
                        not json.loads(text)["predictions"][0]["error"]
                except (OSError, http.client.HTTPException, ValueError) as error:
                    errors.append(repr(error))
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=120)
                    continue
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(f"{response.status}: {text[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + 3600  # until every worker has connected
    ready.wait()
    began = time.perf_counter()
    deadline = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {"requests": len(latencies) + len(errors), "seconds": elapsed,
            "rps": len(latencies) / elapsed if elapsed else 0.0,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "errors": len(errors), "first_error": errors[0] if errors else ""}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_setting(model: str, name: str, bodies: list[bytes], batching: bool,
                concurrencies: list[int], requests: int, seconds: float,
                extra: list[str]) -> dict[int, dict]:
    server = Server(model, "--model-name", name, *([] if batching else ["--no-batching"]),
                    *extra)
    try:
        server.wait(name)
        load(server.url, name, bodies, 4, 40, 30)  # warm up both sides
        results = {}
        for concurrency in concurrencies:
            before = server.stats()
            results[concurrency] = load(server.url, name, bodies, concurrency, requests,
                                        seconds)
            after = server.stats()
            calls = after["model_calls"] - before["model_calls"]
            results[concurrency]["mean_batch"] = (after["rows"] - before["rows"]) / calls \
                if calls else float("nan")
            print(f"  batching {'on ' if batching else 'off'} concurrency {concurrency:>3}: "
                  f"{results[concurrency]['rps']:7.1f} req/s", file=sys.stderr, flush=True)
        return results
    finally:
        server.stop()


def memory_run(model: str, name: str, bodies: list[bytes], requests: int,
               extra: list[str]) -> None:
    server = Server(model, "--model-name", name, *extra)
    try:
        server.wait(name)
        start = server.rss_mb()
        warm = load(server.url, name, bodies, 8, 200, 600)
        after_warm = server.rss_mb()
        checkpoints = [(0, start), (warm["requests"], after_warm)]
        done, errors, began = warm["requests"], warm["errors"], time.perf_counter()
        step = max(1000, (requests - done) // 5)
        while done < requests:
            result = load(server.url, name, bodies, 8, min(step, requests - done), 3600)
            done += result["requests"]
            errors += result["errors"]
            checkpoints.append((done, server.rss_mb()))
        elapsed = time.perf_counter() - began
        print(f"\nresident memory of the server (VmRSS), {requests} classify_wav requests of one "
              f"1 s clip, concurrency 8, batching on ({errors} errors, "
              f"{(done - warm['requests']) / elapsed:.0f} req/s after warm-up):")
        for count, rss in checkpoints:
            print(f"  after {count:>6} requests: {rss:8.1f} MB")
        print(f"  growth after warm-up: {checkpoints[-1][1] - after_warm:+.1f} MB")
    finally:
        server.stop()


def model_calls(model: str, bodies: list[bytes]) -> None:
    """classify_wav without HTTP: what batching can gain at most, before any request work."""
    import tensorflow as tf

    from speakergender import serving

    classify = serving.load_model(model).classify_wav
    clips = [base64.b64decode(json.loads(body)["instances"][0]["wav_bytes"]["b64"])
             for body in bodies]
    print("classify_wav in process, 1 s clips:")
    alone = None
    for size in (1, 8, 32):
        batch = tf.constant([clips[i % len(clips)] for i in range(size)])
        classify(wav_bytes=batch)  # the first call's set-up is not counted
        calls, began = 0, time.perf_counter()
        while time.perf_counter() - began < 3.0:
            classify(wav_bytes=batch)
            calls += 1
        per_clip = 1000 * (time.perf_counter() - began) / calls / size
        alone = alone or per_clip
        print(f"  batch {size:>2}: {per_clip:5.2f} ms per clip ({alone / per_clip:.2f}x alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="SavedModel folder, model folder or run name")
    parser.add_argument("--requests", type=int, default=600,
                        help="most requests per setting (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="most seconds per setting (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent clients to try (default: 1 8 32)")
    parser.add_argument("--clips", type=int, default=32, help="distinct clips sent in turn")
    parser.add_argument("--memory-requests", type=int, default=0,
                        help="run the memory check with this many requests instead")
    parser.add_argument("--model-calls", action="store_true",
                        help="instead, time classify_wav in this process (no HTTP): ms per clip "
                             "alone and in batches of 8 and 32, the ceiling on batching's gain")
    parser.add_argument("--server-option", action="append", default=[],
                        help="passed on to the server, e.g. --server-option=--max-batch-size=16")
    args = parser.parse_args()

    name = "bench"
    bodies = clip_bodies(args.clips)
    if args.model_calls:
        model_calls(args.model, bodies)
        return
    if args.memory_requests:
        memory_run(args.model, name, bodies, args.memory_requests, args.server_option)
        return
    results = {batching: run_setting(args.model, name, bodies, batching, args.concurrency,
                                     args.requests, args.seconds, args.server_option)
               for batching in (True, False)}
    print(f"\nclassify_wav over HTTP, one 1 s clip per request, at most {args.requests} "
          f"requests or {args.seconds:g} s per setting ({os.cpu_count()} CPUs, load generator "
          "on the same machine)\n")
    header = (f"{'concurrency':>11} | {'batching':>8} | {'req/s':>7} | {'p50 ms':>7} | "
              f"{'p99 ms':>7} | {'errors':>6} | {'mean batch':>10}")
    print(header)
    print("-" * len(header))
    for concurrency in args.concurrency:
        for batching in (True, False):
            r = results[batching][concurrency]
            print(f"{concurrency:>11} | {'on' if batching else 'off':>8} | {r['rps']:7.1f} | "
                  f"{r['p50_ms']:7.1f} | {r['p99_ms']:7.1f} | {r['errors']:>6} | "
                  f"{r['mean_batch']:10.1f}")
    top = max(args.concurrency)
    on, off = results[True][top]["rps"], results[False][top]["rps"]
    print(f"\nbatching speed-up at concurrency {top}: {on / off:.2f}x "
          f"({on:.1f} vs {off:.1f} req/s)" if off else "")
    for batching in (True, False):
        for concurrency, r in results[batching].items():
            if r["first_error"]:
                print(f"first error (batching {'on' if batching else 'off'}, concurrency "
                      f"{concurrency}): {r['first_error']}")


if __name__ == "__main__":
    main()
