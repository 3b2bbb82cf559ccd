"""Band-limited resampling on graph, for an input rate known only at run time.

Output sample n is the input's band-limited interpolation at the output instant
t = n / output_rate, through a zero-phase Kaiser-windowed sinc low-pass filter: no delay (sample 0
stays at t = 0, as in `scipy.signal.resample_poly`), and any rational rate ratio L / M (the
gcd-reduced output / input rate). The filter's cutoff sits just below the Nyquist frequency of
the lower rate: flat (under 0.1 dB ripple) to `PASSBAND_EDGE` x that rate, at least
`STOPBAND_ATTENUATION_DB` down from `STOPBAND_EDGE` (0.5) x that rate, so nothing above the lower
rate's Nyquist frequency survives or aliases above -80 dB.

Filtering and rate change happen together in the frequency domain, by overlap-save: the input is
cut into frames of N = c * M samples that overlap by two margins of at least the filter's half
length; each frame's real FFT is multiplied by the filter's (real, zero-phase) response,
truncated (or zero-padded) to the c * L bins of the output rate and transformed back with an
inverse real FFT of length c * L; each frame keeps the outputs between its margins. The response
is below -80 dB at and past the lower rate's Nyquist frequency, so dropping those bins aliases
nothing the filter has not removed. This costs a few dozen flops per input sample, against
~2 x 300 for evaluating a ~300-tap windowed sinc at each output instant.

The response is designed on graph, in float64, from the run-time rates (`_design_graph`, valid
for any pair in a traced function); for the common pairs (`_COMMON_PAIRS`) it is precomputed with
numpy at import (`_design_numpy`, the same design) and looked up. Rows of a batch that share a
rate are resampled together (`resample_rows`). Inputs longer than `_MAX_CHUNK_ELEMENTS` samples
are processed in chunks of whole frames, so past one padded copy of the input, memory stays
bounded.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from speakergender.frontend import branching

# Passband edge and stopband edge as fractions of min(input_rate, output_rate).
PASSBAND_EDGE = 0.475
STOPBAND_EDGE = 0.5
STOPBAND_ATTENUATION_DB = 80.0

# Kaiser's design formulas (Oppenheim & Schafer, 7.6): window shape for the attenuation, and
# length for a transition band of (STOPBAND_EDGE - PASSBAND_EDGE) x the lower rate.
_KAISER_BETA = 0.1102 * (STOPBAND_ATTENUATION_DB - 8.7)
# Half the kernel's length, in samples at the lower of the two rates.
_HALF_WIDTH = (STOPBAND_ATTENUATION_DB - 7.95) / (
    2.285 * 2.0 * math.pi * (STOPBAND_EDGE - PASSBAND_EDGE)) / 2.0
_CUTOFF = (PASSBAND_EDGE + STOPBAND_EDGE) / 2.0

# Frame sizing: at least this many input samples per FFT frame, frames at least
# _OVERLAP_FACTOR x their two margins long (so margins cost at most 1 / _OVERLAP_FACTOR of the
# work), but no more than _MAX_FRAME samples unless the margins force it.
_MIN_FRAME = 4096
_OVERLAP_FACTOR = 8
_MAX_FRAME = 1 << 17

# Inputs longer than this many samples are processed in chunks of whole frames.
_MAX_CHUNK_ELEMENTS = 1 << 22

# Rate pairs whose filters are precomputed at import: every rate the front end meets, to and
# from 16 kHz, and between the two CD / video rates.
_COMMON_RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
_COMMON_PAIRS = tuple([(rate, 16000) for rate in _COMMON_RATES]
                      + [(16000, rate) for rate in _COMMON_RATES]
                      + [(44100, 48000), (48000, 44100)])
# A bound on the precomputed table's size in elements; with a smaller one (tests set 0) every
# filter is designed on graph.
_MAX_TABLE_ELEMENTS = 1 << 21


def reach_seconds(input_rate: int, output_rate: int) -> float:
    """How far around an output instant the input matters: half the filter's length, in
    seconds. Outputs further than this from either end of an input depend on nothing outside
    it, so a long input resampled in overlapping pieces gives what it gives whole."""
    scale = input_rate / min(input_rate, output_rate)
    return (math.ceil(_HALF_WIDTH * scale) + 2) / input_rate


def _pow2_ceil(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _frame_plan(down: int, taps_each_side: int) -> tuple[int, int]:
    """Frame size in units of `down` input samples, and each margin in the same units."""
    margin = -(-(taps_each_side + 2) // down)
    frames = _pow2_ceil(max(-(-_MIN_FRAME // down), _OVERLAP_FACTOR * 2 * margin))
    if frames * down > _MAX_FRAME:
        # Unusual ratios (large M): the smallest frames whose margins take half the work.
        frames = _pow2_ceil(4 * margin)
    return frames, margin


def _design_numpy(input_rate: int, output_rate: int) -> dict:
    """The plan and filter response for one rate pair, as `_design_graph` computes it."""
    divisor = math.gcd(input_rate, output_rate)
    down, up = input_rate // divisor, output_rate // divisor
    scale = input_rate / min(input_rate, output_rate)
    cutoff = _CUTOFF / scale
    half_width = _HALF_WIDTH * scale
    taps_each_side = math.ceil(half_width)
    frames, margin = _frame_plan(down, taps_each_side)
    offsets = np.arange(-taps_each_side, taps_each_side + 1, dtype=np.float64)
    x = math.pi * 2.0 * cutoff * offsets
    sinc = np.where(x == 0, 1.0, np.sin(x) / np.where(x == 0, 1.0, x))
    ratio = offsets / half_width
    window = np.where(np.abs(ratio) <= 1.0,
                      np.i0(_KAISER_BETA * np.sqrt(np.maximum(1.0 - ratio * ratio, 0.0)))
                      / np.i0(_KAISER_BETA), 0.0)
    kernel = sinc * window
    kernel /= kernel.sum()
    frame = frames * down
    wrapped = np.zeros(frame)
    wrapped[:taps_each_side + 1] = kernel[taps_each_side:]
    wrapped[frame - taps_each_side:] = kernel[:taps_each_side]
    bins = min(frames * down, frames * up) // 2 + 1
    # Zero phase: real.
    response = np.fft.rfft(wrapped).real[:bins] * (up / down)
    return dict(down=down, up=up, frames=frames, margin=margin,
                response=response.astype(np.float32))


def _build_table():
    designs = [_design_numpy(i, o) for i, o in _COMMON_PAIRS]
    keys = np.array([i * (1 << 24) + o for i, o in _COMMON_PAIRS], np.int64)
    params = np.array([[d["down"], d["up"], d["frames"], d["margin"]] for d in designs],
                      np.int64)
    sizes = np.array([len(d["response"]) for d in designs], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    responses = np.concatenate([d["response"] for d in designs]).astype(np.float32)
    return keys, params, starts, sizes, responses


_TABLE = _build_table()


def _gcd(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Greatest common divisor of two positive int64 scalars (Euclid)."""
    _, gcd = tf.while_loop(
        lambda a, b: a > 0, lambda a, b: (tf.math.floormod(b, a), a), [a, b])
    return gcd


def _ceil_div(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return (a + b - 1) // b


def _pow2_ceil_graph(x: tf.Tensor) -> tf.Tensor:
    """Smallest power of two >= x, for a positive int64 scalar."""
    x = tf.maximum(x, 1)
    exponent = tf.math.ceil(tf.math.log(tf.cast(x, tf.float64)) / math.log(2.0))
    power = tf.cast(tf.pow(tf.constant(2.0, tf.float64), exponent), tf.int64)
    # Guard against rounding in log: step to the exact power of two.
    power = tf.where(power // 2 >= x, power // 2, power)
    return tf.where(power < x, power * 2, power)


def _design_graph(input_rate: tf.Tensor, output_rate: tf.Tensor):
    """`_design_numpy` on graph, for int64 rates: (down, up, frames, margin, response)."""
    divisor = _gcd(input_rate, output_rate)
    down, up = input_rate // divisor, output_rate // divisor
    lower_rate = tf.cast(tf.minimum(input_rate, output_rate), tf.float64)
    scale = tf.cast(input_rate, tf.float64) / lower_rate
    cutoff = _CUTOFF / scale
    half_width = _HALF_WIDTH * scale
    taps_each_side = tf.cast(tf.math.ceil(half_width), tf.int64)

    margin = _ceil_div(taps_each_side + 2, down)
    frames = _pow2_ceil_graph(tf.maximum(_ceil_div(tf.constant(_MIN_FRAME, tf.int64), down),
                                         _OVERLAP_FACTOR * 2 * margin))
    frames = tf.where(frames * down > _MAX_FRAME, _pow2_ceil_graph(4 * margin), frames)

    offsets = tf.cast(tf.range(-taps_each_side, taps_each_side + 1), tf.float64)
    x = math.pi * 2.0 * cutoff * offsets
    is_zero = tf.equal(x, 0.0)
    one = tf.ones_like(x)
    sinc = tf.where(is_zero, one, tf.sin(x) / tf.where(is_zero, one, x))
    ratio = offsets / half_width
    window = tf.math.bessel_i0(_KAISER_BETA * tf.sqrt(tf.maximum(1.0 - ratio * ratio, 0.0)))
    peak = tf.math.bessel_i0(tf.constant(_KAISER_BETA, tf.float64))
    window = tf.where(tf.abs(ratio) <= 1.0, window / peak, tf.zeros_like(window))
    kernel = sinc * window
    kernel /= tf.reduce_sum(kernel)
    frame = frames * down
    wrapped = tf.concat([kernel[taps_each_side:],
                         tf.zeros([frame - 2 * taps_each_side - 1], tf.float64),
                         kernel[:taps_each_side]], axis=0)
    bins = tf.minimum(frames * down, frames * up) // 2 + 1
    response = tf.math.real(tf.signal.rfft(wrapped))[:bins] * (
        tf.cast(up, tf.float64) / tf.cast(down, tf.float64))
    return down, up, frames, margin, tf.cast(response, tf.float32)


def _plan(input_rate: tf.Tensor, output_rate: tf.Tensor):
    """(down, up, frames, margin, response) for int64 rates: looked up or designed."""
    keys, params, starts, sizes, responses = _TABLE
    if len(responses) > _MAX_TABLE_ELEMENTS:
        return _design_graph(input_rate, output_rate)
    matches = tf.equal(tf.constant(keys), input_rate * (1 << 24) + output_rate)

    def look_up():
        index = tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32)
        row = tf.gather(tf.constant(params), index)
        response = tf.slice(tf.constant(responses), tf.gather(tf.constant(starts), index)[None],
                            tf.gather(tf.constant(sizes), index)[None])
        return row[0], row[1], row[2], row[3], response

    return branching.cond(tf.reduce_any(matches), look_up,
                          lambda: _design_graph(input_rate, output_rate))


def _resample_frames(blocks: tf.Tensor, overlap: tf.Tensor, skip: tf.Tensor, keep: tf.Tensor,
                     up_frame: tf.Tensor, response: tf.Tensor) -> tf.Tensor:
    """Overlap-save: frame k is blocks[k] followed by the first `overlap` samples of blocks[k + 1]
    (zeros after the last block); returns the `keep` outputs each frame holds from its `skip`th
    on, [<# blocks>, keep]."""
    tail = tf.concat([blocks[1:, :overlap], tf.zeros(tf.stack([1, overlap]), tf.float32)],
                     axis=0)
    frames = tf.concat([blocks, tail], axis=1)
    bins = tf.size(response, out_type=tf.int64)
    spectrum = tf.signal.rfft(frames)[:, :bins] * tf.cast(response, tf.complex64)
    outputs = tf.signal.irfft(spectrum, fft_length=tf.cast(up_frame, tf.int32)[tf.newaxis])
    return outputs[:, skip:skip + keep]


def _resample_batch(waveforms: tf.Tensor, input_rate: tf.Tensor,
                    output_rate: tf.Tensor) -> tf.Tensor:
    """Resamples every row of float32 [rows, samples] (samples > 0) between different, positive
    int64 rates.

    Returns [rows, >= ceil(samples * output_rate / input_rate)]: each row's outputs, then
    padding to be dropped.
    """
    rows = tf.shape(waveforms, out_type=tf.int64)[0]
    num_in = tf.shape(waveforms, out_type=tf.int64)[1]
    num_out = (num_in * output_rate + input_rate - 1) // input_rate
    down, up, frames, margin, response = _plan(input_rate, output_rate)
    hop = (frames - 2 * margin) * down        # input samples each frame advances by
    keep = (frames - 2 * margin) * up         # outputs each frame contributes
    left = margin * down                      # zeros before the input: frame 0's left margin
    # Each row becomes num_frames + 1 blocks of `hop` samples; frame k covers block k and the
    # next block's first 2 * left samples (2 * left <= hop), and gives the outputs for its
    # block's instants. Frames are taken over the rows' blocks all in a row, so each row's last
    # frame reaches into the next row; its outputs are past the row's end and dropped.
    num_frames = _ceil_div(num_out, keep)
    right = (num_frames + 1) * hop - left - num_in
    padded = tf.concat([tf.zeros(tf.stack([rows, left]), tf.float32), waveforms,
                        tf.zeros(tf.stack([rows, right]), tf.float32)], axis=1)
    blocks = tf.reshape(padded, tf.stack([-1, hop]))
    num_blocks = rows * (num_frames + 1)
    args = (2 * left, margin * up, keep, frames * up, response)

    chunk = tf.maximum(_MAX_CHUNK_ELEMENTS // hop, 1)

    def in_one_go():
        return _resample_frames(blocks, *args)

    def in_chunks():
        num_chunks = _ceil_div(num_blocks, chunk)

        def body(i, outputs):
            # This chunk's blocks and the next one (for the last frame's tail).
            part = _resample_frames(blocks[i * chunk:(i + 1) * chunk + 1], *args)
            count = tf.minimum(chunk, num_blocks - i * chunk)
            return i + 1, outputs.write(tf.cast(i, tf.int32), part[:count])

        outputs = tf.TensorArray(tf.float32, size=tf.cast(num_chunks, tf.int32),
                                 infer_shape=False, element_shape=tf.TensorShape([None, None]))
        _, outputs = tf.while_loop(lambda i, _: i < num_chunks, body,
                                   [tf.constant(0, tf.int64), outputs])
        return outputs.concat()

    resampled = branching.cond(num_blocks <= chunk, in_one_go, in_chunks)
    return tf.reshape(resampled, tf.stack([rows, -1]))


def _resample_one(waveform: tf.Tensor, input_rate: tf.Tensor,
                  output_rate: tf.Tensor) -> tf.Tensor:
    num_out = (tf.size(waveform, out_type=tf.int64) * output_rate + input_rate - 1) // input_rate
    # Flat, so dropping the padding slices along the first axis (no copy).
    return tf.reshape(_resample_batch(waveform[tf.newaxis], input_rate, output_rate),
                      [-1])[:num_out]


def _check_rates(is_empty: tf.Tensor, input_rate: tf.Tensor, output_rate: tf.Tensor):
    # An empty waveform passes with any rate: try_decode_wav gives rate 0 for a failed file.
    return tf.debugging.Assert(
        tf.logical_or(is_empty, tf.logical_and(input_rate > 0, output_rate > 0)),
        ["resample: rates must be positive, got", input_rate, output_rate])


def resample(waveform: tf.Tensor, input_rate: int | tf.Tensor,
             output_rate: int | tf.Tensor) -> tf.Tensor:
    """Resamples a waveform with a band-limited (Kaiser-windowed sinc) low-pass filter.

    Output sample n is the input's value at time n / output_rate, so the output has
    ceil(<# samples> * output_rate / input_rate) samples, as from `scipy.signal.resample_poly`.
    Content above 0.5 x min(input_rate, output_rate) is removed.

    Args:
      waveform: float32 [<# samples>].
      input_rate: sample rate of `waveform` in Hz; a Python int or an int32/int64 scalar tensor
        (e.g. read from a WAV header at run time).
      output_rate: the wanted sample rate in Hz, a Python int or an integer scalar tensor.

    Returns:
      float32 [ceil(<# samples> * output_rate / input_rate)]; `waveform` itself when the rates
      are equal.

    Raises:
      tf.errors.InvalidArgumentError: a rate is not positive while the waveform is non-empty.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if isinstance(input_rate, int) and isinstance(output_rate, int) and input_rate == output_rate:
        return waveform
    input_rate = tf.cast(input_rate, tf.int64)
    output_rate = tf.cast(output_rate, tf.int64)
    is_empty = tf.equal(tf.size(waveform), 0)
    with tf.control_dependencies([_check_rates(is_empty, input_rate, output_rate)]):
        return branching.cond(
            tf.logical_or(is_empty, tf.equal(input_rate, output_rate)),
            lambda: tf.identity(waveform),
            lambda: _resample_one(waveform, input_rate, output_rate))


def _to_width(rows: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[rows, width]: cut or zero-padded on the right."""
    rows = rows[:, :width]
    return tf.pad(rows, [[0, 0], [0, width - tf.shape(rows)[1]]])


def resample_rows(waveforms: tf.Tensor, lengths: tf.Tensor, rates: tf.Tensor,
                  output_rate: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Resamples each row of a zero-padded batch from its own rate to `output_rate`.

    Rows already at `output_rate` (all of them, for most corpora) pass untouched. When the rows
    to resample share one rate (the usual case: one corpus, one rate), they are resampled
    together in one batched pass; a batch mixing several other rates pays for a per-row pass.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      rates: int32 [batch], each row's sample rate in Hz (ignored for empty rows).
      output_rate: the wanted rate in Hz.

    Returns:
      float32 [batch, samples'] zero-padded, and int32 [batch] new lengths.
    """
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    lengths = tf.cast(lengths, tf.int32)
    rates = tf.cast(rates, tf.int64)
    needed = tf.not_equal(rates, output_rate) & (lengths > 0)

    def resample_some():
        safe_rates = tf.where(needed, rates, output_rate)
        new_lengths = tf.cast(
            (tf.cast(lengths, tf.int64) * output_rate + safe_rates - 1) // safe_rates, tf.int32)
        width = tf.reduce_max(new_lengths)
        # The rate of the first row that needs resampling; the batched path applies when every
        # such row has it.
        rate = tf.gather(rates, tf.argmax(tf.cast(needed, tf.int32), output_type=tf.int32))
        shared = tf.reduce_all(tf.logical_or(tf.logical_not(needed), tf.equal(rates, rate)))

        def batched():
            # Zero padding past a row's length is what resampling the row alone would pad
            # with, so a row's first new_length outputs match; the rest are zeroed below.
            with tf.control_dependencies([_check_rates(tf.constant(False), rate,
                                                       tf.constant(output_rate, tf.int64))]):
                resampled = _resample_batch(waveforms, rate, tf.constant(output_rate, tf.int64))
            # Either side may be narrower than the widest new row: the resampled rows when a
            # short file is downsampled beside longer rows at the target rate, the untouched
            # ones when a file is upsampled.
            resampled = _to_width(resampled, width)
            mixed = branching.cond(
                tf.reduce_all(needed), lambda: resampled,
                lambda: tf.where(needed[:, tf.newaxis], resampled, _to_width(waveforms, width)))
            return tf.where(tf.sequence_mask(new_lengths, width), mixed, 0.0)

        def per_row():
            def one_row(row):
                waveform, length, rate, needs = row
                waveform = waveform[:length]
                waveform = branching.cond(needs, lambda: resample(waveform, rate, output_rate),
                                          lambda: waveform)
                return tf.pad(waveform, [[0, width - tf.shape(waveform)[0]]])

            return tf.map_fn(one_row, (waveforms, lengths, safe_rates, needed),
                             fn_output_signature=tf.TensorSpec([None], tf.float32))

        return branching.cond(shared, batched, per_row), new_lengths

    return branching.cond(tf.reduce_any(needed), resample_some, lambda: (waveforms, lengths))
