"""The long fuzz run of the on-graph WAV decoder (tests/test_wav_fuzz.py is the short one).

    python benchmarks/fuzz_wav.py [--cases 100000] [--seconds 3600] [--seed 0] [--batch 64]
                                  [--out fuzz-findings] [--model saved_models/NAME]

Starts from valid files of every supported format (PCM 8/16/24/32, float 32/64, plain and
EXTENSIBLE, mono and stereo, several rates and lengths, written by soundfile), mutates header
fields and the chunk table (field values at random and at extremes, chunks inserted, deleted,
duplicated, reordered, resized and unpadded, runs of empty chunks, RIFF size, truncation, byte
flips in the first 100 bytes and anywhere, trailing garbage) and feeds batches of them to
`try_decode_wav_batch`, a sample of them also to `try_decode_wav`. Invariants, per file: no
exception; a decoded row has 0 < length <= file size, a rate within [MIN_SAMPLE_RATE,
MAX_SAMPLE_RATE], finite values and zeros past its length; a failed row has a non-empty message
naming one of the ERR_* problems, length 0, rate 0 and zeros; a file decodes alone as in its
batch; no file takes longer than --case-seconds (batches that take longer are re-run file by
file to find the slow one).

With --model, every batch also goes through that exported model's `classify_wav` (decode,
resample, frame, score): no exception, each file's `error` output is the decoder's message for
it, and each decoded file gets a label and a probability in [0, 1].

Prints the cases run, how many decoded, the errors by message, the slowest single case, peak
RSS and any violation; each violating input is written to --out with a note beside it. Exits 1
when there was a violation.
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import tensorflow as tf

from speakergender.frontend import wav
from speakergender.model_dirs import latest_version_dir

# The WAV helpers the fuzz test uses (chunk parsing), from the tests folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wavfiles import parse_chunks  # noqa: E402

SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
CONTAINERS = ("WAV", "WAVEX")
CHANNELS = (1, 2)
RATES = (8000, 16000, 44100, 48000)
FRAMES = (37, 1500)

# fmt fields: (offset, struct code); offsets from 16 exist in EXTENSIBLE fmt chunks only.
FMT_FIELDS = [(0, "<H"), (2, "<H"), (4, "<I"), (8, "<I"), (12, "<H"), (14, "<H"), (16, "<H"),
              (18, "<H"), (20, "<I"), (24, "<H")]
INTERESTING = [0, 1, 2, 3, 7, 8, 12, 16, 24, 32, 40, 64, 999, 1000, 1001, 1024, 1025, 8000,
               16000, 44100, 65534, 65535, 767_999, 768_000, 768_001, 0x7FFF, 0x8000, 0xFFFE,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 4_000_000_000]
CHUNK_IDS = [b"fmt ", b"data", b"LIST", b"JUNK", b"fact", b"PEAK", b"\0\0\0\0", b"\xff\xfe\"\\"]
ERRORS = sorted((value for name, value in vars(wav).items() if name.startswith("ERR_")),
                key=len, reverse=True)


def base_files() -> list[tuple[str, bytes]]:
    files = []
    for subtype in SUBTYPES:
        for container in CONTAINERS:
            for channels in CHANNELS:
                for rate in RATES:
                    for frames in FRAMES:
                        rng = np.random.default_rng(channels * rate + frames)
                        buffer = io.BytesIO()
                        sf.write(buffer, rng.uniform(-1, 1, (frames, channels)), rate,
                                 subtype=subtype, format=container)
                        files.append((f"{subtype}-{container}-{channels}ch-{rate}-{frames}",
                                      buffer.getvalue()))
    return files


def build(chunks: list[list], riff_size: int | None) -> bytes:
    parts = []
    for chunk_id, size, payload, padded in chunks:
        parts.append(chunk_id + struct.pack("<I", len(payload) if size is None else size)
                     + payload + (b"\0" if padded and len(payload) % 2 else b""))
    body = b"".join(parts)
    return (b"RIFF" + struct.pack("<I", 4 + len(body) if riff_size is None else riff_size)
            + b"WAVE" + body)


class Mutator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def value(self, bits: int) -> int:
        limit = 2**bits - 1
        if self.rng.random() < 0.6:
            return self.rng.choice([v for v in INTERESTING if v <= limit])
        return self.rng.randint(0, limit)

    def mutate(self, contents: bytes) -> tuple[bytes, list[str]]:
        """A mutated copy and the list of what was done to it."""
        rng, done = self.rng, []
        chunks = parse_chunks(contents)
        riff_size = None
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 6])):
            kind = rng.choice(["field", "field", "field", "field", "chunk_size", "insert",
                               "insert_many", "delete", "duplicate", "swap", "unpad",
                               "riff_size"])
            index = rng.randrange(len(chunks)) if chunks else None
            if kind == "field":
                fmt = next((c for c in chunks if c[0] == b"fmt "), None)
                offset, code = rng.choice(FMT_FIELDS)
                width = struct.calcsize(code)
                if fmt is not None and len(fmt[2]) >= offset + width:
                    value = self.value(8 * width)
                    payload = bytearray(fmt[2])
                    payload[offset:offset + width] = struct.pack(code, value)
                    fmt[2] = bytes(payload)
                    done.append(f"fmt[{offset}]={value}")
            elif kind == "chunk_size" and chunks:
                chunks[index][1] = self.value(32)
                done.append(f"size[{index}]={chunks[index][1]}")
            elif kind == "insert":
                chunk_id = rng.choice(CHUNK_IDS + [rng.randbytes(4)])
                payload = rng.randbytes(rng.randrange(49))
                at = rng.randrange(len(chunks) + 1)
                chunks.insert(at, [chunk_id, None, payload, True])
                done.append(f"insert[{at}]={chunk_id!r}+{len(payload)}")
            elif kind == "insert_many":
                count = rng.choice([2, 10, wav.MAX_CHUNKS - 3, wav.MAX_CHUNKS - 2, wav.MAX_CHUNKS,
                                    5000])
                at = rng.randrange(len(chunks) + 1)
                chunks[at:at] = [[b"JUNK", None, b"", True] for _ in range(count)]
                done.append(f"insert_many[{at}]={count}")
            elif kind == "delete" and chunks:
                del chunks[index]
                done.append(f"delete[{index}]")
            elif kind == "duplicate" and chunks:
                chunks.insert(index, list(chunks[index]))
                done.append(f"duplicate[{index}]")
            elif kind == "swap" and chunks:
                other = rng.randrange(len(chunks))
                chunks[index], chunks[other] = chunks[other], chunks[index]
                done.append(f"swap[{index},{other}]")
            elif kind == "unpad" and chunks:
                chunks[index][3] = False
                done.append(f"unpad[{index}]")
            elif kind == "riff_size":
                riff_size = self.value(32)
                done.append(f"riff_size={riff_size}")
        data = bytearray(build(chunks, riff_size))
        for _ in range(rng.choice([0, 0, 1, 2, 4])):
            limit = 100 if rng.random() < 0.8 else len(data)
            if data:
                position = rng.randrange(min(limit, len(data)))
                data[position] ^= rng.randrange(1, 256)
                done.append(f"flip[{position}]")
        if rng.random() < 0.15:
            data = data[:rng.randrange(len(data) + 1)]
            done.append(f"truncate={len(data)}")
        if rng.random() < 0.05:
            data += rng.randbytes(rng.randrange(1, 64))
            done.append("garbage")
        return bytes(data), done


def error_kind(message: str) -> str:
    for known in ERRORS:
        if message.startswith(known):
            return known
    return f"UNKNOWN: {message}"


def check_row(contents: bytes, waveform: np.ndarray, length: int, rate: int,
              message: str) -> str | None:
    """The first broken invariant for one row, or None."""
    if message:
        if error_kind(message).startswith("UNKNOWN"):
            return f"unknown message {message!r}"
        if length != 0 or rate != 0 or waveform.any():
            return f"failed row not empty: length {length}, rate {rate}"
        return None
    if not 0 < length <= len(contents):
        return f"length {length} outside (0, {len(contents)}]"
    if not wav.MIN_SAMPLE_RATE <= rate <= wav.MAX_SAMPLE_RATE:
        return f"rate {rate} outside the limits"
    if not np.isfinite(waveform).all():
        return "non-finite samples"
    if waveform[length:].any():
        return "non-zero samples past the length"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3600.0,
                        help="stop after this long, whatever --cases says")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--case-seconds", type=float, default=5.0,
                        help="the most one file may take")
    parser.add_argument("--single-every", type=int, default=50,
                        help="also decode every Nth file alone and compare")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--model", type=Path,
                        help="also feed every batch to this exported model's classify_wav (a "
                             "version folder, or a model folder for its latest version)")
    args = parser.parse_args(argv)

    decode_batch = tf.function(wav.try_decode_wav_batch,
                               input_signature=[tf.TensorSpec([None], tf.string)])
    decode_one = tf.function(wav.try_decode_wav, input_signature=[tf.TensorSpec([], tf.string)])
    bases = base_files()
    decode_batch(tf.constant([bases[0][1]]))  # tracing, outside the timings
    decode_one(tf.constant(bases[0][1]))
    classify = None
    if args.model:
        saved = args.model if (args.model / "saved_model.pb").is_file() \
            else latest_version_dir(args.model)
        classify = tf.saved_model.load(str(saved)).signatures["classify_wav"]
        classify(wav_bytes=tf.constant([bases[0][1]]))
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    mutator = Mutator(args.seed)
    picker = random.Random(args.seed + 1)
    counts = collections.Counter()
    violations = []
    slowest_batch = (0.0, [])
    slowest_case = (0.0, "", b"")
    start = time.perf_counter()
    cases = 0

    def violation(contents: bytes, what: str, problem: str) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"case-{len(violations):04d}.wav"
        path.write_bytes(contents)
        path.with_suffix(".txt").write_text(f"{problem}\n{what}\n")
        violations.append((path, problem))
        print(f"VIOLATION {path}: {problem} ({what})", flush=True)

    def decode_alone(contents: bytes, what: str):
        nonlocal slowest_case
        began = time.perf_counter()
        try:
            result = decode_one(tf.constant(contents))
        except Exception as e:  # noqa: BLE001 - an exception is the finding
            violation(contents, what, f"try_decode_wav raised {type(e).__name__}: {e}")
            return None
        took = time.perf_counter() - began
        if took > slowest_case[0]:
            slowest_case = (took, what, contents)
        if took > args.case_seconds:
            violation(contents, what, f"took {took:.2f} s alone")
        return result

    def check_classified(batch: list[bytes], whats: list[str], messages: list[str]) -> None:
        began = time.perf_counter()
        try:
            outputs = classify(wav_bytes=tf.constant(batch))
        except Exception as e:  # noqa: BLE001 - an exception is the finding
            for contents, what in zip(batch, whats):
                violation(contents, what, f"classify_wav raised {type(e).__name__}: {e}"[:2000])
            return
        counts["classify_wav seconds"] += time.perf_counter() - began
        errors = [e.decode("utf-8", "replace") for e in outputs["error"].numpy()]
        labels = [label.decode() for label in outputs["label"].numpy()]
        probabilities = outputs["female_probability"].numpy()
        for row, (contents, what) in enumerate(zip(batch, whats)):
            if errors[row] != messages[row]:
                violation(contents, what, f"classify_wav error {errors[row]!r}, decoder "
                                          f"{messages[row]!r}")
            elif not messages[row] and (labels[row] not in ("female", "male", "no speech")
                                        or not 0.0 <= probabilities[row] <= 1.0):
                violation(contents, what, f"classify_wav gave {labels[row]!r}, "
                                          f"{probabilities[row]}")

    while cases < args.cases and time.perf_counter() - start < args.seconds:
        batch, whats = [], []
        for _ in range(min(args.batch, args.cases - cases)):
            name, contents = picker.choice(bases)
            mutated, done = mutator.mutate(contents)
            batch.append(mutated)
            whats.append(f"{name}: {', '.join(done) or 'unchanged'}")
        cases += len(batch)
        began = time.perf_counter()
        try:
            waveforms, lengths, rates, errors = decode_batch(tf.constant(batch))
        except Exception as e:  # noqa: BLE001 - an exception is the finding
            for contents, what in zip(batch, whats):
                violation(contents, what, f"batch raised {type(e).__name__}: {e}"[:2000])
            continue
        took = time.perf_counter() - began
        if took > slowest_batch[0]:
            slowest_batch = (took, list(zip(batch, whats)))
        if took > args.case_seconds:  # find the slow file
            for contents, what in zip(batch, whats):
                decode_alone(contents, what)
        waveforms, lengths, rates = waveforms.numpy(), lengths.numpy(), rates.numpy()
        if classify is not None:
            check_classified(batch, whats, [e.decode("utf-8", "replace")
                                            for e in errors.numpy()])
        for row, (contents, what) in enumerate(zip(batch, whats)):
            message = errors.numpy()[row].decode("utf-8", "replace")
            counts[error_kind(message) if message else "decoded"] += 1
            problem = check_row(contents, waveforms[row], int(lengths[row]), int(rates[row]),
                                message)
            if problem:
                violation(contents, what, problem)
            if picker.randrange(args.single_every) == 0:
                alone = decode_alone(contents, what)
                if alone is not None:
                    waveform, rate, error = alone
                    if (error.numpy().decode("utf-8", "replace") != message
                            or int(rate) != int(rates[row])
                            or not np.array_equal(waveform.numpy(),
                                                  waveforms[row, :int(lengths[row])])):
                        violation(contents, what, "decodes differently alone than in a batch")
        if cases % (args.batch * 100) < args.batch:
            print(f"... {cases} cases, {time.perf_counter() - start:.0f} s", flush=True)

    elapsed = time.perf_counter() - start
    # The slowest batch's files one by one: the slowest single case.
    for contents, what in slowest_batch[1]:
        decode_alone(contents, what)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\ncases: {cases} in {elapsed:.0f} s ({cases / max(elapsed, 1e-9):.0f}/s), seed "
          f"{args.seed}, batches of {args.batch}")
    print(f"decoded: {counts['decoded']}")
    print("errors by message:")
    for kind, count in counts.most_common():
        if kind not in ("decoded", "classify_wav seconds"):
            print(f"  {count:8d}  {kind}")
    print(f"slowest batch: {slowest_batch[0]:.3f} s; slowest single case: {slowest_case[0]:.3f} s"
          f" ({slowest_case[1]}, {len(slowest_case[2])} bytes)")
    if classify is not None:
        print(f"classify_wav ({args.model}): every batch, "
              f"{counts['classify_wav seconds']:.0f} s of the run")
    print(f"peak RSS: {peak_mb:.0f} MB (after tracing: {rss_start / 1024:.0f} MB)")
    print(f"violations: {len(violations)}" + (f", written to {args.out}" if violations else ""))
    for path, problem in violations[:20]:
        print(f"  {path}: {problem}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
