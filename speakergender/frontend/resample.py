"""Band-limited resampling on graph, for an input rate known only at run time.

Each output sample is the input's band-limited interpolation at the output instant
t = n / output_rate: a Kaiser-windowed sinc centred on t, evaluated at the surrounding input
samples. The kernel is symmetric about t, so there is no delay (sample 0 stays at t = 0, as in
`scipy.signal.resample_poly`), and it works for any rate ratio, integer or not. Its cutoff sits
just below the Nyquist frequency of the lower rate: flat to 0.45 x that rate, at least
`STOPBAND_ATTENUATION_DB` down from 0.5 x that rate.
"""

from __future__ import annotations

import math

import tensorflow as tf

# Passband edge and stopband edge as fractions of min(input_rate, output_rate).
PASSBAND_EDGE = 0.45
STOPBAND_EDGE = 0.5
STOPBAND_ATTENUATION_DB = 80.0

# Kaiser's design formulas (Oppenheim & Schafer, 7.6): window shape for the attenuation, and
# length for a transition band of (STOPBAND_EDGE - PASSBAND_EDGE) x the lower rate.
_KAISER_BETA = 0.1102 * (STOPBAND_ATTENUATION_DB - 8.7)
# Half the kernel's length, in samples at the lower of the two rates.
_HALF_WIDTH = (STOPBAND_ATTENUATION_DB - 7.95) / (
    2.285 * 2.0 * math.pi * (STOPBAND_EDGE - PASSBAND_EDGE)) / 2.0
_CUTOFF = (PASSBAND_EDGE + STOPBAND_EDGE) / 2.0

# Bounds on the size of the [<# outputs>, <# taps>] tensors built at once.
_MAX_CHUNK_ELEMENTS = 1 << 19
_MAX_TABLE_ELEMENTS = 1 << 21


def _gcd(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Greatest common divisor of two positive int64 scalars (Euclid)."""
    _, gcd = tf.while_loop(
        lambda a, b: a > 0, lambda a, b: (tf.math.floormod(b, a), a), [a, b])
    return gcd


def _kernel(frac: tf.Tensor, offsets: tf.Tensor, cutoff: tf.Tensor,
            half_width: tf.Tensor) -> tf.Tensor:
    """Windowed-sinc interpolation weights.

    Args:
      frac: float64 [<# outputs>], each output instant's offset past its input sample, in
        [0, 1) input samples.
      offsets: float64 [<# taps>], tap positions relative to that input sample.
      cutoff: float64 scalar, cutoff in cycles per input sample.
      half_width: float64 scalar, the window's half length in input samples.

    Returns:
      float32 [<# outputs>, <# taps>].
    """
    distance = frac[:, tf.newaxis] - offsets[tf.newaxis, :]
    x = math.pi * 2.0 * cutoff * distance
    is_zero = tf.equal(x, 0.0)
    one = tf.ones_like(x)
    sinc = tf.where(is_zero, one, tf.sin(x) / tf.where(is_zero, one, x))
    ratio = distance / half_width
    window = tf.math.bessel_i0(_KAISER_BETA * tf.sqrt(tf.maximum(1.0 - ratio * ratio, 0.0)))
    peak = tf.math.bessel_i0(tf.constant(_KAISER_BETA, tf.float64))
    window = tf.where(tf.abs(ratio) <= 1.0, window / peak, tf.zeros_like(window))
    return tf.cast(2.0 * cutoff * sinc * window, tf.float32)


def _resample_nonempty(waveform: tf.Tensor, input_rate: tf.Tensor,
                       output_rate: tf.Tensor) -> tf.Tensor:
    """`resample` for a non-empty waveform and different, positive int64 rates."""
    num_in = tf.size(waveform, out_type=tf.int64)
    num_out = (num_in * output_rate + input_rate - 1) // input_rate
    lower_rate = tf.cast(tf.minimum(input_rate, output_rate), tf.float64)
    scale = tf.cast(input_rate, tf.float64) / lower_rate
    cutoff = _CUTOFF / scale
    half_width = _HALF_WIDTH * scale
    taps_each_side = tf.cast(tf.math.ceil(half_width), tf.int64)
    # Output n sits at input position n * input_rate / output_rate = base + frac; its taps are
    # input samples base + offsets.
    offsets = tf.range(1 - taps_each_side, taps_each_side + 1)
    num_taps = tf.size(offsets, out_type=tf.int64)
    padded = tf.pad(waveform, tf.stack([tf.stack([taps_each_side, taps_each_side + 1])]))

    def position(n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        numerator = n * input_rate
        base = numerator // output_rate
        remainder = tf.cast(numerator - base * output_rate, tf.float64)
        return base, remainder / tf.cast(output_rate, tf.float64)

    def weights(n: tf.Tensor) -> tf.Tensor:
        return _kernel(position(n)[1], tf.cast(offsets, tf.float64), cutoff, half_width)

    # The fractional offset repeats every `period` outputs, so for common rate pairs a small
    # table holds every kernel the waveform needs (one row for 48 kHz -> 16 kHz).
    period = output_rate // _gcd(input_rate, output_rate)
    table_rows = tf.minimum(period, num_out)
    use_table = table_rows * num_taps <= _MAX_TABLE_ELEMENTS
    table = weights(tf.range(tf.where(use_table, table_rows, 0)))

    chunk = tf.maximum(_MAX_CHUNK_ELEMENTS // num_taps, 1)
    num_chunks = (num_out + chunk - 1) // chunk

    def resample_chunk(i, outputs):
        n = tf.range(i * chunk, tf.minimum((i + 1) * chunk, num_out))
        base, _ = position(n)
        kernels = tf.cond(
            use_table, lambda: tf.gather(table, tf.math.floormod(n, period)), lambda: weights(n))
        # taps has shape [<# outputs in chunk>, <# taps>].
        taps = tf.gather(padded, base[:, tf.newaxis] + offsets[tf.newaxis, :] + taps_each_side)
        return i + 1, outputs.write(tf.cast(i, tf.int32), tf.reduce_sum(kernels * taps, axis=1))

    outputs = tf.TensorArray(tf.float32, size=tf.cast(num_chunks, tf.int32), infer_shape=False,
                             element_shape=tf.TensorShape([None]))
    _, outputs = tf.while_loop(
        lambda i, _: i < num_chunks, resample_chunk, [tf.constant(0, tf.int64), outputs])
    return outputs.concat()


def resample(waveform: tf.Tensor, input_rate: int | tf.Tensor,
             output_rate: int | tf.Tensor) -> tf.Tensor:
    """Resamples a waveform with a band-limited (Kaiser-windowed sinc) interpolator.

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
    # An empty waveform passes with any rate: try_decode_wav gives rate 0 for a failed file.
    check = tf.debugging.Assert(
        tf.logical_or(is_empty, tf.logical_and(input_rate > 0, output_rate > 0)),
        ["resample: rates must be positive, got", input_rate, output_rate])
    with tf.control_dependencies([check]):
        return tf.cond(
            tf.logical_or(is_empty, tf.equal(input_rate, output_rate)),
            lambda: tf.identity(waveform),
            lambda: _resample_nonempty(waveform, input_rate, output_rate))


def resample_rows(waveforms: tf.Tensor, lengths: tf.Tensor, rates: tf.Tensor,
                  output_rate: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Resamples each row of a zero-padded batch from its own rate to `output_rate`.

    Rows already at `output_rate` (all of them, for most corpora) pass untouched; only a batch
    holding some other rate pays for a per-row pass.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      rates: int32 [batch], each row's sample rate in Hz (ignored for empty rows).
      output_rate: the wanted rate in Hz.

    Returns:
      float32 [batch, samples'] zero-padded, and int32 [batch] new lengths.
    """
    lengths = tf.cast(lengths, tf.int32)
    rates = tf.cast(rates, tf.int64)
    needed = tf.not_equal(rates, output_rate) & (lengths > 0)

    def resample_some():
        safe_rates = tf.where(needed, rates, output_rate)
        new_lengths = tf.cast(
            (tf.cast(lengths, tf.int64) * output_rate + safe_rates - 1) // safe_rates, tf.int32)
        width = tf.reduce_max(new_lengths)

        def one_row(row):
            waveform, length, rate, needs = row
            waveform = waveform[:length]
            waveform = tf.cond(needs, lambda: resample(waveform, rate, output_rate),
                               lambda: waveform)
            return tf.pad(waveform, [[0, width - tf.shape(waveform)[0]]])

        resampled = tf.map_fn(one_row, (waveforms, lengths, safe_rates, needed),
                              fn_output_signature=tf.TensorSpec([None], tf.float32))
        return resampled, new_lengths

    return tf.cond(tf.reduce_any(needed), resample_some, lambda: (waveforms, lengths))
