"""RIFF/WAVE bytes -> float32 samples, on graph.

`tf.audio.decode_wav` reads only 16-bit PCM (and rejects 24-bit, float and EXTENSIBLE files),
so this module parses the RIFF chunk list itself with core TF ops. It runs inside `tf.data` maps
and exported SavedModel signatures, and scales samples exactly as libsndfile (soundfile) does,
so a model sees the same numbers whichever reader prepared its data.

`try_decode_wav` never raises: on bad input it returns an empty waveform, rate 0 and a message,
which lets a `tf.data` pipeline drop a bad file without ending the epoch.
`try_decode_wav_batch` does the same for a batch of files at once (the pipeline's and the
exported `classify_wav`'s way, far cheaper per file); the one-file functions run it on a batch
of one, so there is a single decoder.

Header values are checked against plausible limits (MIN_SAMPLE_RATE ... MAX_DURATION_SECONDS
below) before any work is sized from them, so the work and memory a file costs here, and
downstream (resampling to a model's rate multiplies the samples by at most
16000 / MIN_SAMPLE_RATE), are bounded by the file's real size, whatever its header claims.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from speakergender.frontend import branching

# Error messages. Where a message carries numbers, the constant is its fixed prefix. No quotes:
# the graph-mode Assert would escape them.
ERR_NOT_RIFF_WAVE = "not a RIFF/WAVE file"
ERR_NO_FMT_CHUNK = "no fmt chunk"
ERR_SHORT_FMT_CHUNK = "fmt chunk too short"
ERR_NO_DATA_CHUNK = "no data chunk"
ERR_TRUNCATED_DATA = "truncated data chunk"
ERR_UNSUPPORTED_FORMAT = "unsupported WAV format tag"
ERR_UNSUPPORTED_BITS = "unsupported bit depth"
ERR_ZERO_CHANNELS = "zero channels"
ERR_ZERO_RATE = "zero sample rate"
ERR_ZERO_SAMPLES = "zero samples (empty data chunk)"
ERR_TOO_MANY_CHUNKS = "too many chunks"
ERR_CHUNK_PAST_END = "chunk runs past end of file"
ERR_TOO_MANY_CHANNELS = "too many channels"
ERR_SAMPLE_RATE_RANGE = "sample rate out of range"
ERR_TOO_LONG = "recording too long"
ERR_TOO_MANY_SAMPLES = "too many samples"
ERR_NON_FINITE = "non-finite sample"

# Limits on what a header may claim; a file beyond one gets the matching ERR_* message.
# Below 1 kHz no recording holds speech (its band ends at 500 Hz); real files start at 4 or
# 8 kHz. The floor also caps what resampling to 16 kHz may multiply the samples by (16x).
MIN_SAMPLE_RATE = 1_000
# The highest rate audio interfaces record at (DXD 705.6 kHz, and 768 kHz).
MAX_SAMPLE_RATE = 768_000
# libsndfile's own limit (SF_MAX_CHANNELS), so this reads every file soundfile reads. Channels
# cost nothing by themselves here: the samples a file yields are bounded by its bytes, however
# they are split into channels, and channels are averaged row by row.
MAX_CHANNELS = 1024
# Chunks walked looking for 'fmt ' and 'data'. Real files carry a handful (LIST, fact, bext,
# cue, JUNK padding...); the walk is a loop of one step per chunk, so this bounds its cost.
MAX_CHUNKS = 1000
# Four hours: far beyond a spoken recording, and 230 M samples (920 MB) at 16 kHz.
MAX_DURATION_SECONDS = 4 * 60 * 60
# Samples per file are counted in int32.
MAX_SAMPLES = 2**31 - 1

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Names for the tags users are most likely to meet, used in the unsupported-format message.
FORMAT_TAG_NAMES = {
    0x0000: "unknown",
    0x0002: "ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x00FF: "AAC",
}

# Sample encodings, in the branch order of `_decode_samples`: (format tag, bits per sample).
_ENCODINGS = (
    (WAVE_FORMAT_PCM, 8),
    (WAVE_FORMAT_PCM, 16),
    (WAVE_FORMAT_PCM, 24),
    (WAVE_FORMAT_PCM, 32),
    (WAVE_FORMAT_IEEE_FLOAT, 32),
    (WAVE_FORMAT_IEEE_FLOAT, 64),
)

# Zero bytes appended before reading headers, so a fixed-size read never runs off the end.
_HEADER_PADDING = 64


class WavError(ValueError):
    """A WAV file that cannot be read; the message names the file and the problem."""


def _read_uints(padded: tf.Tensor, pos: tf.Tensor, num_bytes: int) -> tf.Tensor:
    """Little-endian unsigned integers of `num_bytes` bytes at byte `pos` of each row, int64 [B]."""
    raw = tf.io.decode_raw(
        tf.strings.substr(padded, tf.cast(pos, tf.int64),
                          tf.fill(tf.shape(pos), tf.constant(num_bytes, tf.int64))),
        tf.uint8)
    raw = tf.cast(tf.reshape(raw, [-1, num_bytes]), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256**i for i in range(num_bytes)], tf.int64), axis=1)


def _hex4(values: tf.Tensor) -> tf.Tensor:
    """'0x' and four upper-case hex digits of each int64 in [0, 0xFFFF], string [B]."""
    shifts = tf.constant([12, 8, 4, 0], tf.int64)
    digits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(values[:, tf.newaxis], shifts), 15)
    hex_digits = tf.gather(tf.constant(list("0123456789ABCDEF")), digits)
    return "0x" + tf.strings.reduce_join(hex_digits, axis=1)


def _format_tag_messages(tags: tf.Tensor) -> tf.Tensor:
    """'unsupported WAV format tag 0x0002 (ADPCM)' per row; unnamed tags get no name."""
    suffixes = tf.fill(tf.shape(tags), "")
    for known_tag, name in FORMAT_TAG_NAMES.items():
        suffixes = tf.where(tf.equal(tags, known_tag), f" ({name})", suffixes)
    return ERR_UNSUPPORTED_FORMAT + " " + _hex4(tags) + suffixes


# A function of its own, so that eager callers run the walk as one graph, not as a Python loop
# of eager ops (a thousand steps of those take seconds).
@tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64)],
             autograph=False)
def _find_chunks(padded: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Walks each file's chunk headers after 'RIFF....WAVE' and locates 'fmt ' and 'data'.

    The walk takes at most `MAX_CHUNKS` steps, each a few ops on the whole batch.

    Args:
      padded: string [B], each file's bytes followed by `_HEADER_PADDING` zero bytes.
      size: int64 [B], each file's length in bytes before padding.

    Returns:
      int64 [B] fmt_pos, fmt_size, data_pos, data_size (payload offset and declared size;
      -1 where the chunk was not found), bool [B] too_many (the walk was still looking after
      `MAX_CHUNKS` chunks), int64 [B] past_end_pos, past_end_size (the header offset and
      declared size of the chunk the walk stopped at because it runs past the end of the file;
      -1 where none did).
    """
    not_found = tf.fill(tf.shape(size), tf.constant(-1, tf.int64))

    def walking(pos, fmt_pos, data_pos):
        return (pos + 8 <= size) & ((fmt_pos < 0) | (data_pos < 0))

    def keep_walking(pos, fmt_pos, fmt_size, data_pos, data_size, past_end_pos, past_end_size):
        return tf.reduce_any(walking(pos, fmt_pos, data_pos))

    def next_chunk(pos, fmt_pos, fmt_size, data_pos, data_size, past_end_pos, past_end_size):
        active = walking(pos, fmt_pos, data_pos)
        at = tf.where(active, pos, 0)  # rows that stopped may point past their end
        chunk_id = tf.strings.substr(padded, at, tf.fill(tf.shape(at), tf.constant(4, tf.int64)))
        chunk_size = _read_uints(padded, at + 4, 4)
        is_fmt = active & tf.equal(chunk_id, "fmt ") & (fmt_pos < 0)
        is_data = active & tf.equal(chunk_id, "data") & (data_pos < 0)
        fmt_pos = tf.where(is_fmt, pos + 8, fmt_pos)
        fmt_size = tf.where(is_fmt, chunk_size, fmt_size)
        data_pos = tf.where(is_data, pos + 8, data_pos)
        data_size = tf.where(is_data, chunk_size, data_size)
        # A chunk running past the end ends the walk (the next position is past the end too).
        past_end = active & (pos + 8 + chunk_size > size)
        past_end_pos = tf.where(past_end, pos, past_end_pos)
        past_end_size = tf.where(past_end, chunk_size, past_end_size)
        # RIFF pads odd-sized chunks with one byte that the size does not count.
        pos = tf.where(active, pos + 8 + chunk_size + tf.bitwise.bitwise_and(chunk_size, 1), pos)
        return tuple(tf.ensure_shape(value, size.shape)
                     for value in (pos, fmt_pos, fmt_size, data_pos, data_size, past_end_pos,
                                   past_end_size))

    start = tf.fill(tf.shape(size), tf.constant(12, tf.int64))
    pos, fmt_pos, fmt_size, data_pos, data_size, past_end_pos, past_end_size = tf.while_loop(
        keep_walking, next_chunk, (start,) + (not_found,) * 6, maximum_iterations=MAX_CHUNKS)
    too_many = walking(pos, fmt_pos, data_pos)
    return fmt_pos, fmt_size, data_pos, data_size, too_many, past_end_pos, past_end_size


def _chunk_names(padded: tf.Tensor, pos: tf.Tensor) -> tf.Tensor:
    """'LIST chunk' for the chunk whose header is at `pos`, or 'chunk' when its id is not
    letters, digits and spaces (no quotes or backslashes in messages), string [B]."""
    chunk_id = tf.strings.substr(padded, tf.maximum(pos, 0),
                                tf.fill(tf.shape(pos), tf.constant(4, tf.int64)))
    printable = tf.strings.regex_full_match(chunk_id, "[A-Za-z0-9 ]{4}")
    named = tf.strings.regex_replace(chunk_id, " +$", "") + " chunk"
    return tf.where(printable & tf.not_equal(tf.strings.strip(chunk_id), ""), named, "chunk")


def _decode_samples(data: tf.Tensor, encoding: tf.Tensor, num_samples: tf.Tensor) -> tf.Tensor:
    """Raw sample bytes -> float32, scaled as libsndfile scales them, one file per row.

    Args:
      data: string [B] of interleaved samples, whole samples only.
      encoding: int32 [B], an index into `_ENCODINGS` (rows of other values decode to zeros).
      num_samples: int32 [B], samples in each row.

    Returns:
      float32 [B, max(num_samples)], zero-padded.
    """
    width = tf.maximum(tf.reduce_max(num_samples), 1)
    shape = tf.stack([tf.shape(data)[0], width])

    def raw(dtype: tf.DType, sample_bytes: int) -> tf.Tensor:
        return tf.io.decode_raw(data, dtype, fixed_length=width * sample_bytes)

    def pcm8():
        return (tf.cast(raw(tf.uint8, 1), tf.float32) - 128.0) / 128.0

    def pcm16():
        return tf.cast(raw(tf.int16, 2), tf.float32) / 32768.0

    def pcm24():
        triplets = tf.reshape(raw(tf.uint8, 3), tf.stack([shape[0], width, 3]))
        low = tf.cast(triplets[..., 0], tf.int32) + 256 * tf.cast(triplets[..., 1], tf.int32)
        # Reading the top byte as int8 sign-extends the 24-bit value.
        high = tf.cast(tf.bitcast(triplets[..., 2], tf.int8), tf.int32)
        return tf.cast(low + 65536 * high, tf.float32) / 2.0**23

    def pcm32():
        # Rounds to float32 first, then scales: libsndfile's order, so results match bit for bit.
        return tf.cast(raw(tf.int32, 4), tf.float32) * 2.0**-31

    def float32():
        return raw(tf.float32, 4)

    def float64():
        return tf.cast(raw(tf.float64, 8), tf.float32)

    decoders = [pcm8, pcm16, pcm24, pcm32, float32, float64]

    def one_encoding():
        # decode_raw pads short rows with zero bytes, which every encoding but 8-bit PCM
        # decodes to 0.0: nothing left to mask.
        return branching.switch_case(first, decoders)

    def mixed_encodings():
        samples = tf.zeros(shape, tf.float32)
        # Only the encodings present are decoded.
        for index, decode in enumerate(decoders):
            rows = tf.equal(encoding, index)
            decoded = branching.cond(tf.reduce_any(rows), decode,
                                     lambda: tf.zeros(shape, tf.float32))
            samples = tf.where(rows[:, tf.newaxis], decoded, samples)
        # Zero samples past each row's end (8-bit PCM's zero byte is -1.0, undecodable rows
        # are zeros already); a select, not a product, which would flush float32 denormals.
        return tf.where(tf.sequence_mask(num_samples, width), samples, 0.0)

    # A batch from one corpus usually holds one encoding, which then costs a single pass. (The
    # maximum, not row 0, so that an empty batch takes the general path.)
    first = tf.reduce_max(encoding)
    uniform = tf.reduce_all(tf.equal(encoding, first)) & (first > 0)
    return branching.cond(uniform, one_encoding, mixed_encodings)


def _channels_of_row(samples: tf.Tensor, num_frames: tf.Tensor,
                     num_channels: tf.Tensor) -> tf.Tensor:
    """One row of interleaved samples as float32 [frames, channels]."""
    return tf.reshape(samples[:num_frames * num_channels], tf.stack([num_frames, num_channels]))


def _parse_batch(contents: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Decodes a batch of WAV files without raising.

    Args:
      contents: string [B], each a whole WAV file (or any bytes).

    Returns:
      float32 [B, max samples] interleaved samples (zero-padded), int32
      [B] frames, int32 [B] channels, int32 [B] sample rate and string [B] error; a row that
      failed has 0 frames,
      rate 0 and a message, a row that decoded an empty message.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    size = tf.cast(tf.strings.length(contents), tf.int64)
    padded = contents + tf.constant(b"\0" * _HEADER_PADDING)

    def header_at(pos: tf.Tensor, num_bytes: int) -> tf.Tensor:
        # Clamped, so substr's position is always in range; reads past `size` see zeros.
        return _read_uints(padded, tf.clip_by_value(pos, 0, size), num_bytes)

    def bytes_at(pos: int) -> tf.Tensor:
        return tf.strings.substr(padded, tf.fill(tf.shape(size), pos), tf.fill(tf.shape(size), 4))

    is_riff_wave = tf.equal(bytes_at(0), "RIFF") & tf.equal(bytes_at(8), "WAVE")
    (fmt_pos, fmt_size, data_pos, data_size, too_many_chunks, past_end_pos,
     past_end_size) = _find_chunks(padded, size)

    tag = header_at(fmt_pos, 2)
    num_channels = header_at(fmt_pos + 2, 2)
    rate = header_at(fmt_pos + 4, 4)
    bits = header_at(fmt_pos + 14, 2)
    is_extensible = tf.equal(tag, WAVE_FORMAT_EXTENSIBLE) & (fmt_size >= 40)
    # The first two bytes of the SubFormat GUID are the actual format tag.
    tag = tf.where(is_extensible, header_at(fmt_pos + 24, 2), tag)

    encoding = tf.fill(tf.shape(size), -1)
    for index, (known_tag, known_bits) in enumerate(_ENCODINGS):
        encoding = tf.where(tf.equal(tag, known_tag) & tf.equal(bits, known_bits), index, encoding)
    is_known_tag = tf.equal(tag, WAVE_FORMAT_PCM) | tf.equal(tag, WAVE_FORMAT_IEEE_FLOAT)

    # From channels and bit depth, not the header's block align, which libsndfile ignores too.
    frame_bytes = tf.maximum(num_channels * (bits // 8), 1)
    present = tf.maximum(size - data_pos, 0)
    num_frames = data_size // frame_bytes
    num_samples = num_frames * num_channels
    seconds = tf.cast(num_frames, tf.float64) / tf.cast(tf.maximum(rate, 1), tf.float64)

    as_string = tf.strings.as_string
    # The chunk the walk stopped at ran past the end: the data chunk (truncated data, reported
    # below where the fmt chunk was found) or any other.
    data_past_end = (past_end_pos >= 0) & tf.equal(past_end_pos + 8, data_pos)
    other_past_end = (past_end_pos >= 0) & ~data_past_end

    def truncated_message():
        return (ERR_TRUNCATED_DATA + " (declares " + as_string(data_size) + " bytes, "
                + as_string(present) + " present)")

    # (failed, its message): messages are built only for a batch where some file failed.
    checks = [
        (~is_riff_wave, lambda: ERR_NOT_RIFF_WAVE),
        (too_many_chunks, lambda: ERR_TOO_MANY_CHUNKS + " (fmt and data chunks not found in "
         f"the first {MAX_CHUNKS})"),
        (other_past_end, lambda: ERR_CHUNK_PAST_END + " (" + _chunk_names(padded, past_end_pos)
         + " at byte " + as_string(past_end_pos) + " declares " + as_string(past_end_size)
         + " bytes, " + as_string(tf.maximum(size - past_end_pos - 8, 0)) + " present)"),
        # Before 'no fmt chunk': a data chunk claiming more bytes than the file holds hides a
        # fmt chunk after it.
        (data_past_end & (fmt_pos < 0), truncated_message),
        (fmt_pos < 0, lambda: ERR_NO_FMT_CHUNK),
        (fmt_size < 16, lambda: ERR_SHORT_FMT_CHUNK + " (" + as_string(fmt_size)
         + " bytes, need 16)"),
        (data_pos < 0, lambda: ERR_NO_DATA_CHUNK),
        (~is_known_tag, lambda: _format_tag_messages(tag)),
        (encoding < 0, lambda: ERR_UNSUPPORTED_BITS + " " + as_string(bits)
         + " bits for format tag " + _hex4(tag)),
        (tf.equal(num_channels, 0), lambda: ERR_ZERO_CHANNELS),
        (num_channels > MAX_CHANNELS, lambda: ERR_TOO_MANY_CHANNELS + " ("
         + as_string(num_channels) + f", at most {MAX_CHANNELS})"),
        (tf.equal(rate, 0), lambda: ERR_ZERO_RATE),
        ((rate < MIN_SAMPLE_RATE) | (rate > MAX_SAMPLE_RATE), lambda: ERR_SAMPLE_RATE_RANGE
         + " (" + as_string(rate) + f" Hz, need {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE})"),
        (data_size > present, truncated_message),
        (tf.equal(num_frames, 0), lambda: ERR_ZERO_SAMPLES),
        (seconds > MAX_DURATION_SECONDS, lambda: ERR_TOO_LONG + " ("
         + as_string(seconds, precision=1) + f" s, at most {MAX_DURATION_SECONDS} s)"),
        (num_samples > MAX_SAMPLES, lambda: ERR_TOO_MANY_SAMPLES + " (" + as_string(num_samples)
         + f", at most {MAX_SAMPLES})"),
    ]
    ok = ~tf.reduce_any(tf.stack([failed for failed, _ in checks]), axis=0)

    def messages():
        error = tf.fill(tf.shape(size), "")
        # Walk backwards so the first failing check is the one reported.
        for failed, message in reversed(checks):
            error = tf.where(failed, message(), error)
        return error

    error = branching.cond(tf.reduce_all(ok), lambda: tf.fill(tf.shape(size), ""), messages)

    num_frames = tf.cast(tf.where(ok, num_frames, 0), tf.int32)
    num_channels = tf.cast(tf.where(ok, num_channels, 1), tf.int32)
    num_samples = num_frames * num_channels  # at most MAX_SAMPLES where ok, 0 elsewhere
    data_bytes = tf.where(ok, tf.cast(num_samples, tf.int64) * (bits // 8), 0)
    # Byte positions stay int64: a file may pass 2 GiB.
    data = tf.strings.substr(contents, tf.where(ok, data_pos, 0), data_bytes)
    samples = _decode_samples(data, tf.where(ok, encoding, -1), num_samples)

    # Float files may hold NaN or infinity (or float64 values beyond float32's range), which
    # would poison every feature and score computed from them; PCM never does.
    is_float = ok & (encoding >= _ENCODINGS.index((WAVE_FORMAT_IEEE_FLOAT, 32)))

    def all_finite():
        return tf.fill(tf.shape(num_frames), -1), samples

    def drop_non_finite():
        bad = ~tf.math.is_finite(samples)
        first = tf.argmax(tf.cast(bad, tf.int8), axis=1, output_type=tf.int32)
        first = tf.where(tf.reduce_any(bad, axis=1), first, -1)
        return first, tf.where(first[:, tf.newaxis] >= 0, 0.0, samples)

    def check_finite():
        return branching.cond(tf.reduce_all(tf.math.is_finite(samples)), all_finite,
                              drop_non_finite)

    # Only batches holding float files pay for a pass, and only those with a bad one for two.
    first_bad, samples = branching.cond(tf.reduce_any(is_float), check_finite, all_finite)
    non_finite = first_bad >= 0
    error = tf.where(non_finite, ERR_NON_FINITE + " (NaN or infinity as float32) at frame "
                     + as_string(first_bad // tf.maximum(num_channels, 1)), error)
    num_frames = tf.where(non_finite, 0, num_frames)
    num_channels = tf.where(non_finite, 1, num_channels)
    ok = ok & ~non_finite
    rate = tf.where(ok, tf.cast(tf.minimum(rate, tf.int32.max), tf.int32), 0)
    return samples, num_frames, num_channels, rate, error


def _parse(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`_parse_batch` for one file: float32 [frames, channels] ([0, 1] on error), rate, error."""
    samples, num_frames, num_channels, rate, error = _parse_batch(
        tf.reshape(tf.convert_to_tensor(contents, tf.string), [1]))
    channels = _channels_of_row(samples[0], num_frames[0], num_channels[0])
    channels.set_shape([None, None])
    return channels, rate[0], error[0]


def _raise_on_error(error: tf.Tensor) -> list[tf.Operation]:
    """Raises InvalidArgumentError carrying `error` unless it is empty; control deps in graphs."""
    if tf.executing_eagerly():
        message = error.numpy().decode("utf-8", "replace")
        if message:
            raise tf.errors.InvalidArgumentError(None, None, f"invalid WAV data: {message}")
        return []
    return [tf.debugging.Assert(tf.equal(error, ""), ["invalid WAV data:", error])]


def downmix_to_mono(channels: tf.Tensor) -> tf.Tensor:
    """Averages channels.

    Args:
      channels: float32 [<# samples>, <# channels>].

    Returns:
      float32 [<# samples>].
    """
    return tf.reduce_mean(channels, axis=1)


def decode_wav_channels(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to float32 samples in [-1, 1] per channel.

    Reads PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, plain or
    WAVE_FORMAT_EXTENSIBLE, any number of channels, chunks in any order.

    Args:
      contents: scalar tf.string, a whole WAV file.

    Returns:
      float32 [<# samples>, <# channels>] and the int32 scalar sample rate in Hz.

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a readable WAV file; the message names
        the problem (one of the ERR_* messages).
    """
    channels, rate, error = _parse(contents)
    with tf.control_dependencies(_raise_on_error(error)):
        return tf.identity(channels), tf.identity(rate)


def decode_wav(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to a mono float32 waveform (channels averaged).

    Args:
      contents: scalar tf.string, a whole WAV file.

    Returns:
      float32 [<# samples>] and the int32 scalar sample rate in Hz.

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a readable WAV file.
    """
    channels, rate = decode_wav_channels(contents)
    return downmix_to_mono(channels), rate


def try_decode_wav(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to a mono float32 waveform; never raises on bad bytes.

    Args:
      contents: scalar tf.string, any bytes.

    Returns:
      float32 [<# samples>], int32 scalar sample rate in Hz and a scalar tf.string error
      message. On success the message is empty; on failure the waveform is empty and the rate 0.
    """
    channels, rate, error = _parse(contents)
    return downmix_to_mono(channels), rate, error


def try_decode_wav_batch(contents: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Decodes a batch of WAV files to mono float32 waveforms at once; never raises.

    One pass over the whole batch costs far less than a pass per file, whose per-op overhead
    dominates at the length of a spoken word.

    Args:
      contents: string [B], any bytes.

    Returns:
      float32 [B, max samples] zero-padded waveforms (channels averaged), int32 [B] samples per
      row, int32 [B] sample rates in Hz and string [B] error messages (empty for rows that
      decoded; a failed row has no samples and rate 0).
    """
    samples, num_frames, num_channels, rate, error = _parse_batch(contents)

    max_frames = tf.reduce_max(num_frames)

    def average_channels():
        # Row by row: a batch-wide [B, frames, channels] tensor would let one short file with
        # many channels beside a long mono one take memory in their product.
        def downmix(row):
            mono = downmix_to_mono(_channels_of_row(*row))
            return tf.pad(mono, [[0, max_frames - tf.shape(mono)[0]]])

        return tf.map_fn(downmix, (samples, num_frames, num_channels),
                         fn_output_signature=tf.TensorSpec([None], tf.float32))

    mono = branching.cond(tf.reduce_max(num_channels) <= 1,
                          lambda: samples[:, :max_frames], average_channels)
    return mono, num_frames, rate, error


_try_decode_wav_graph = tf.function(
    try_decode_wav, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a WAV file eagerly into a mono float32 waveform.

    Args:
      path: the file to read.

    Returns:
      float32 numpy [<# samples>] and the sample rate in Hz.

    Raises:
      WavError: the file is missing, unreadable or not a readable WAV file; the message starts
        with the path.
    """
    try:
        contents = Path(path).read_bytes()
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except OSError as e:
        raise WavError(f"{path}: cannot read file ({e.strerror or e})") from None
    waveform, rate, error = _try_decode_wav_graph(tf.constant(contents))
    message = error.numpy().decode("utf-8", "replace")
    if message:
        raise WavError(f"{path}: {message}")
    return waveform.numpy(), int(rate)
