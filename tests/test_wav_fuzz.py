"""Fuzzing speakergender.frontend.wav: valid files of every supported format, with header fields
and the chunk table mutated, must decode or fail with a message, fast, never raise; and an
exported model's `classify_wav` must score them or name their problem, without disturbing the
files beside them in the batch.

The short, reproducible run lives here (derandomized, no example database); benchmarks/fuzz_wav.py
is the long one.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from speakergender.frontend import wav
from speakergender.model_dirs import latest_version_dir
from wavfiles import parse_chunks

SECONDS_PER_CASE = 5.0
# The default suite's short run; WAV_FUZZ_EXAMPLES=5000 (say) runs a longer one, as reproducible.
MAX_EXAMPLES = int(os.environ.get("WAV_FUZZ_EXAMPLES", "200"))
# Through a whole exported model (decode, resample, frame, score): fewer, each costs more.
CLASSIFY_EXAMPLES = int(os.environ.get("WAV_FUZZ_CLASSIFY_EXAMPLES", "40"))
# No example database (settings below), and Hypothesis's other caches go outside the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "speakergender-hypothesis")

SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
CONTAINERS = ("WAV", "WAVEX")
CHANNELS = (1, 2)
RATES = (8000, 16000, 44100)


def _base_wav(subtype: str, container: str, channels: int, rate: int) -> bytes:
    rng = np.random.default_rng(channels * rate)
    samples = rng.uniform(-1.0, 1.0, (37, channels))  # an odd frame count: odd 8-bit data sizes
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format=container)
    return buffer.getvalue()


BASES = {(subtype, container, channels, rate): _base_wav(subtype, container, channels, rate)
         for subtype in SUBTYPES for container in CONTAINERS for channels in CHANNELS
         for rate in RATES}


def build(chunks: list[list], riff_size: int | None = None) -> bytes:
    body = b""
    for chunk_id, size, payload, padded in chunks:
        declared = len(payload) if size is None else size
        body += chunk_id + struct.pack("<I", declared) + payload
        if padded and len(payload) % 2:
            body += b"\0"
    return b"RIFF" + struct.pack("<I", (4 + len(body)) if riff_size is None else riff_size) + \
        b"WAVE" + body


# fmt fields: (name, offset, struct code). Offsets 16.. exist in EXTENSIBLE fmt chunks.
FMT_FIELDS = [("tag", 0, "<H"), ("channels", 2, "<H"), ("rate", 4, "<I"),
              ("byte_rate", 8, "<I"), ("block_align", 12, "<H"), ("bits", 14, "<H"),
              ("cb_size", 16, "<H"), ("valid_bits", 18, "<H"), ("channel_mask", 20, "<I"),
              ("sub_tag", 24, "<H")]
INTERESTING = [0, 1, 2, 3, 7, 8, 12, 16, 24, 32, 40, 64, 999, 1000, 1001, 1024, 1025, 8000,
               16000, 44100, 65534, 65535, 767_999, 768_000, 768_001, 0x7FFF, 0x8000, 0xFFFE,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 4_000_000_000]
CHUNK_IDS = [b"fmt ", b"data", b"LIST", b"JUNK", b"fact", b"bext", b"\0\0\0\0", b"\xff\xfe\"\\"]


def field_values(bits: int):
    limit = 2**bits - 1
    return st.one_of(st.sampled_from([v for v in INTERESTING if v <= limit]),
                     st.integers(0, limit))


def _fmt_index(chunks):
    return next((i for i, c in enumerate(chunks) if c[0] == b"fmt "), None)


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "chunk_size", "insert", "insert_many",
                                 "delete", "duplicate", "swap", "unpad", "riff_size"]))
    if kind == "field":
        name, offset, code = draw(st.sampled_from(FMT_FIELDS))
        return kind, offset, code, draw(field_values(8 * struct.calcsize(code)))
    if kind == "chunk_size":
        return kind, draw(st.integers(0, 8)), draw(field_values(32))
    if kind == "insert":
        return (kind, draw(st.integers(0, 8)), draw(st.one_of(st.sampled_from(CHUNK_IDS),
                                                               st.binary(min_size=4, max_size=4))),
                draw(st.binary(max_size=48)))
    if kind == "insert_many":  # runs of empty chunks, around the MAX_CHUNKS limit
        return kind, draw(st.integers(0, 8)), draw(st.sampled_from(
            [1, 10, wav.MAX_CHUNKS - 3, wav.MAX_CHUNKS - 2, wav.MAX_CHUNKS, 3000]))
    if kind in ("delete", "duplicate", "unpad"):
        return kind, draw(st.integers(0, 8))
    if kind == "swap":
        return kind, draw(st.integers(0, 8)), draw(st.integers(0, 8))
    return kind, draw(field_values(32))


def mutate(contents: bytes, mutations, flips, truncate_to) -> bytes:
    chunks = parse_chunks(contents)
    riff_size = None
    for m in mutations:
        kind = m[0]
        if kind == "field":
            index = _fmt_index(chunks)
            if index is not None:
                _, offset, code, value = m
                payload = bytearray(chunks[index][2])
                width = struct.calcsize(code)
                if len(payload) >= offset + width:
                    payload[offset:offset + width] = struct.pack(code, value)
                    chunks[index][2] = bytes(payload)
        elif kind == "chunk_size" and chunks:
            chunks[m[1] % len(chunks)][1] = m[2]
        elif kind == "insert":
            chunks.insert(m[1] % (len(chunks) + 1), [m[2], None, m[3], True])
        elif kind == "insert_many":
            at = m[1] % (len(chunks) + 1)
            chunks[at:at] = [[b"JUNK", None, b"", True] for _ in range(m[2])]
        elif kind == "delete" and chunks:
            del chunks[m[1] % len(chunks)]
        elif kind == "duplicate" and chunks:
            index = m[1] % len(chunks)
            chunks.insert(index, list(chunks[index]))
        elif kind == "swap" and chunks:
            i, j = m[1] % len(chunks), m[2] % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif kind == "unpad" and chunks:
            chunks[m[1] % len(chunks)][3] = False
        elif kind == "riff_size":
            riff_size = m[1]
    data = bytearray(build(chunks, riff_size))
    for position, value in flips:
        if position < len(data):
            data[position] ^= value
    if truncate_to is not None:
        data = data[:truncate_to]
    return bytes(data)


decode_batch = tf.function(wav.try_decode_wav_batch,
                           input_signature=[tf.TensorSpec([None], tf.string)])
decode_one = tf.function(wav.try_decode_wav, input_signature=[tf.TensorSpec([], tf.string)])


@functools.cache
def _traced() -> None:
    """Traces both functions once, outside any timed case."""
    decode_batch(tf.constant([b""]))
    decode_one(tf.constant(b""))


@pytest.fixture(scope="module")
def traced():
    """Tracing takes seconds: done before hypothesis times any case."""
    _traced()


def check_decoding(contents: bytes) -> None:
    """The invariants: a waveform or a message, never an exception, within SECONDS_PER_CASE."""
    _traced()
    start = time.perf_counter()
    waveforms, lengths, rates, errors = decode_batch(tf.constant([contents]))
    waveform, rate, error = decode_one(tf.constant(contents))
    took = time.perf_counter() - start
    assert took < SECONDS_PER_CASE, took
    waveforms, length, batch_rate = waveforms.numpy(), int(lengths[0]), int(rates[0])
    message = errors.numpy()[0].decode("utf-8", "replace")
    assert error.numpy().decode("utf-8", "replace") == message
    assert waveforms.shape == (1, length)
    if message:
        assert length == 0 and batch_rate == 0 and int(rate) == 0 and waveform.shape == (0,)
    else:
        assert 0 < length <= len(contents)
        assert wav.MIN_SAMPLE_RATE <= batch_rate <= wav.MAX_SAMPLE_RATE and int(rate) == batch_rate
        assert np.isfinite(waveforms).all()
        np.testing.assert_array_equal(waveform.numpy(), waveforms[0])


@pytest.mark.parametrize("key", list(BASES), ids=["-".join(map(str, key)) for key in BASES])
def test_every_base_file_decodes(key):
    subtype, _, channels, rate = key
    contents = BASES[key]
    waveforms, lengths, rates, errors = decode_batch(tf.constant([contents]))
    assert errors.numpy()[0] == b"" and int(lengths[0]) == 37 and int(rates[0]) == rate
    expected = sf.read(io.BytesIO(contents), dtype="float32", always_2d=True)[0].mean(axis=1)
    np.testing.assert_allclose(waveforms.numpy()[0], expected, rtol=1e-6, atol=1e-7)


BASE_KEYS = sorted(BASES)


def flips_to_write(base: tuple, position: int, new_bytes: bytes) -> list[tuple[int, int]]:
    """The byte flips that turn `base`'s bytes at `position` into `new_bytes`."""
    old = BASES[base][position:position + len(new_bytes)]
    return [(position + i, a ^ b) for i, (a, b) in enumerate(zip(old, new_bytes)) if a ^ b]


# Float files written by soundfile: fmt, fact and PEAK chunks, samples from byte 80.
FLOAT_MONO, DOUBLE_MONO = ("FLOAT", "WAV", 1, 16000), ("DOUBLE", "WAV", 1, 8000)


@settings(max_examples=MAX_EXAMPLES, deadline=int(SECONDS_PER_CASE * 1000), derandomize=True,
          database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=st.sampled_from(BASE_KEYS),
       mutations=st.lists(mutation(), max_size=6),
       flips=st.lists(st.tuples(st.integers(0, 99), st.integers(1, 255)), max_size=4),
       truncate_to=st.one_of(st.none(), st.integers(0, 400)))
# Regression cases (each once a finding, or a boundary worth pinning down):
# flipped bytes that spell a NaN in a float file, and a float64 beyond float32's range.
@example(base=FLOAT_MONO, mutations=[], flips=flips_to_write(FLOAT_MONO, 84, struct.pack(
    "<f", np.nan)), truncate_to=None)
@example(base=DOUBLE_MONO, mutations=[], flips=flips_to_write(DOUBLE_MONO, 88, struct.pack(
    "<d", 1e300)), truncate_to=None)
# 8-bit data with an odd size and the pad byte dropped, as the last chunk.
@example(base=("PCM_U8", "WAV", 1, 8000), mutations=[("unpad", 1)], flips=[], truncate_to=None)
# zero channels in an EXTENSIBLE header; a header cut inside the fmt chunk.
@example(base=("PCM_16", "WAVEX", 2, 44100), mutations=[("field", 2, "<H", 0)], flips=[],
         truncate_to=None)
@example(base=("PCM_24", "WAV", 2, 16000), mutations=[], flips=[], truncate_to=30)
# fmt and data behind exactly the most chunks walked, and one more.
@example(base=("PCM_16", "WAV", 1, 16000), mutations=[("insert_many", 0, wav.MAX_CHUNKS - 2)],
         flips=[], truncate_to=None)
@example(base=("PCM_16", "WAV", 1, 16000), mutations=[("insert_many", 0, wav.MAX_CHUNKS)],
         flips=[], truncate_to=None)
def test_mutated_files_decode_or_fail_with_a_message(traced, base, mutations, flips,
                                                     truncate_to):
    check_decoding(mutate(BASES[base], mutations, flips, truncate_to))


def test_mutate_without_mutations_is_the_identity():
    for contents in BASES.values():
        assert mutate(contents, [], [], None) == contents


@pytest.mark.parametrize("base, position, value", [
    (FLOAT_MONO, 84, struct.pack("<f", np.nan)), (DOUBLE_MONO, 88, struct.pack("<d", 1e300))])
def test_regression_non_finite_samples_are_named(base, position, value):
    contents = mutate(BASES[base], [], flips_to_write(base, position, value), None)
    _, _, error = decode_one(tf.constant(contents))
    assert error.numpy().decode() == f"{wav.ERR_NON_FINITE} (NaN or infinity as float32) at frame 1"


# --- the same mutations through an exported model's classify_wav --------------------------------


def _voice_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


GOOD = _voice_wav()


@pytest.fixture(scope="module")
def classify(untrained_exported_model):
    """The exported model's classify_wav, and its outputs for GOOD alone."""
    signature = tf.saved_model.load(str(latest_version_dir(untrained_exported_model))) \
        .signatures["classify_wav"]
    alone = signature(wav_bytes=tf.constant([GOOD]))
    _traced()
    return signature, {name: value.numpy()[0] for name, value in alone.items()}


@settings(max_examples=CLASSIFY_EXAMPLES, deadline=int(SECONDS_PER_CASE * 1000),
          derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=st.sampled_from(BASE_KEYS),
       mutations=st.lists(mutation(), max_size=6),
       flips=st.lists(st.tuples(st.integers(0, 99), st.integers(1, 255)), max_size=4),
       truncate_to=st.one_of(st.none(), st.integers(0, 400)))
# A rate no common pair has (767,999 Hz: designed on graph, a 3-million-sample frame), one far
# below speech rates, and a file that cannot be decoded at all.
@example(base=("PCM_16", "WAV", 1, 16000), mutations=[("field", 4, "<I", 767_999)], flips=[],
         truncate_to=None)
@example(base=("PCM_16", "WAV", 1, 16000), mutations=[("field", 4, "<I", 1000)], flips=[],
         truncate_to=None)
@example(base=("PCM_16", "WAV", 1, 16000), mutations=[], flips=[], truncate_to=30)
def test_classify_wav_scores_or_names_the_problem_and_spares_its_neighbours(
        classify, base, mutations, flips, truncate_to):
    signature, alone = classify
    contents = mutate(BASES[base], mutations, flips, truncate_to)
    start = time.perf_counter()
    outputs = signature(wav_bytes=tf.constant([GOOD, contents, GOOD]))
    took = time.perf_counter() - start
    assert took < SECONDS_PER_CASE, took
    errors = [e.decode("utf-8", "replace") for e in outputs["error"].numpy()]
    expected_error = decode_batch(tf.constant([contents]))[3].numpy()[0].decode("utf-8",
                                                                               "replace")
    assert errors == ["", expected_error, ""]
    probability = outputs["female_probability"].numpy()
    labels = [label.decode() for label in outputs["label"].numpy()]
    for row in (0, 2):  # the good file scores as it does alone
        np.testing.assert_allclose(probability[row], alone["female_probability"], atol=1e-6)
        assert labels[row] == alone["label"].decode()
    if expected_error:
        assert labels[1] == "" and outputs["duration_seconds"].numpy()[1] == 0
    else:
        assert labels[1] in ("female", "male", "no speech")
        assert 0.0 <= probability[1] <= 1.0 and outputs["duration_seconds"].numpy()[1] > 0
