"""Waveform augmentations that keep gender cues: recording conditions, gain, noise, time shift.

`augment_batch` passes training windows through what stands between a voice and a recorder: a
room, a microphone, background noise, the recorder's gain and clipping, a telephone line and a
DC offset. Nothing here changes pitch or formants: every stage is a linear filter, an addition
or a memoryless non-linearity, and the telephone's 8 kHz round trip keeps the duration.
SpecAugment works on features and so lives in the model (`models.spec_augment`).

Every draw is stateless and keyed by one seed per window, so a seed repeats exactly and a
window's result does not depend on the rest of its batch. `tf.random.stateless_*` take one seed
per call, so per-window draws would need a loop over windows; instead every draw, per window or
per sample, is a counter-based integer hash (`_mix`) of the window's seed, a stream number and
the draw's index, in core uint32 ops. (`RandomIndexShuffle`, the one stateless op taking a seed
per element, costs ~100 ns a value and maps nearby seeds to nearby values.)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from speakergender.config import AugmentParams

_TELEPHONE_RATE = 8000
_TELEPHONE_BAND_HZ = (300.0, 3400.0)
_TELEPHONE_EDGE_HZ = 100.0   # raised-cosine transitions, inside the band
_MU = 255.0
_A = 87.6
_HIGH_PASS_ORDER = 2
_LOW_PASS_ORDER = 4
_RESPONSE_STEP_HZ = 10.0

# Streams: one per use of a window's seed, so adding a draw to one stage moves no other.
(_LEGACY, _ROOM, _COLOUR, _NOISE, _GAIN, _SOFT_CLIP, _HARD_CLIP, _TELEPHONE, _DC_OFFSET,
 _NOISE_KEYS) = range(10)


def _seeds(seed: tf.Tensor, count: int) -> tf.Tensor:
    """`count` independent [2] seeds derived from one."""
    return tf.random.experimental.stateless_split(seed, num=count)


def _uint32(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint32)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """C. Wellons' 'lowbias32' integer hash, a bijection on uint32 (whose arithmetic wraps)."""
    for shift, multiplier in ((16, 0x21F0AAAD), (15, 0xD35A2D97)):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _uint32(shift)))
        x = x * _uint32(multiplier)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _uint32(15)))


def _row_keys(seeds: tf.Tensor, streams: list[int]) -> tf.Tensor:
    """uint32 [rows, len(streams), 2]: for each row and stream, two hashes of all 128 bits of
    the row's seed, one per starting constant. All streams at once: a few ops whatever their
    number."""
    starts = [[start ^ stream for start in (0x9E3779B9, 0x85EBCA6B)] for stream in streams]
    keys = _mix(tf.constant(starts, tf.uint32))[tf.newaxis]
    words = tf.reshape(tf.bitcast(tf.cast(seeds, tf.int64), tf.uint32), [-1, 4])
    for word in tf.unstack(words, axis=1):
        keys = _mix(tf.bitwise.bitwise_xor(keys, word[:, tf.newaxis, tf.newaxis]))
    return keys


def _hash_uniforms(keys: tf.Tensor, count: int | tf.Tensor) -> tf.Tensor:
    """float32 [..., count] in [0, 1): a hash of each position under each pair of keys.

    Args:
      keys: uint32 [..., 2], from `_row_keys`.
      count: values per pair.
    """
    index = tf.cast(tf.range(count), tf.uint32)
    x = _mix(tf.bitwise.bitwise_xor(index * _uint32(0x9E3779B9) + keys[..., :1], keys[..., 1:]))
    # 24 bits: exact in float32, so `u < 1.0` always holds and probability 1 means always.
    return tf.cast(tf.bitwise.right_shift(x, _uint32(8)), tf.float32) / 2.0**24


def _uniforms(seeds: tf.Tensor, stream: int, count: int | tf.Tensor) -> tf.Tensor:
    """float32 [rows, count] in [0, 1), from each row's seed and `stream`."""
    return _hash_uniforms(_row_keys(seeds, [stream])[:, 0], count)


def _draws(seeds: tf.Tensor, counts: dict[int, int]) -> dict[int, tuple[tf.Tensor, tf.Tensor]]:
    """For each stream: float32 [rows, count] uniforms in [0, 1) and int64 [rows, 2] seeds for
    what the stream draws further. A stream's draws do not depend on the other streams."""
    streams = sorted(counts)
    keys = _row_keys(seeds, streams)
    uniforms = _hash_uniforms(keys, max(counts.values()))
    return {stream: (uniforms[:, i, :counts[stream]], tf.cast(keys[:, i], tf.int64))
            for i, stream in enumerate(streams)}


def _between(u: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _log_between(u: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    return bounds[0] * tf.pow(bounds[1] / bounds[0], u)


def _bin_frequencies(fft_length: int | tf.Tensor, sample_rate: float) -> tf.Tensor:
    """float32 [fft_length // 2 + 1]: rfft bin centres in Hz."""
    bins = tf.range(fft_length // 2 + 1, dtype=tf.float32)
    return bins * (sample_rate / tf.cast(fft_length, tf.float32))


def _samples(clips: tf.Tensor) -> int | tf.Tensor:
    return clips.shape[1] if clips.shape[1] is not None else tf.shape(clips)[1]


def _power(clips: tf.Tensor) -> tf.Tensor:
    """float32 [rows, 1]: mean square of each row."""
    return tf.reduce_mean(tf.square(clips), axis=1, keepdims=True)


def _peak(clips: tf.Tensor) -> tf.Tensor:
    return tf.reduce_max(tf.abs(clips), axis=1, keepdims=True)


def _circular_filter(clips: tf.Tensor, gains: tf.Tensor) -> tf.Tensor:
    """Zero-phase filter by a real gain per rfft bin of the window's own length.

    The window stands for a piece of continuous speech, so filtering (and reverberation) is
    circular: its start receives the smear of its end, as it would receive that of the speech
    before it, instead of starting dry.

    Args:
      clips: float32 [rows, samples].
      gains: float32 [rows or 1, samples // 2 + 1] or complex64 (a transfer function).

    Returns:
      float32 [rows, samples].
    """
    samples = _samples(clips)
    spectrum = tf.signal.rfft(clips, [samples]) * tf.cast(gains, tf.complex64)
    return tf.ensure_shape(tf.signal.irfft(spectrum, [samples]), clips.shape)


def _spectral_power(spectrum: tf.Tensor, samples: int | tf.Tensor) -> tf.Tensor:
    """float32 [rows, 1]: the mean square of irfft(spectrum, [samples]) (Parseval), where the
    DC and any Nyquist bin are real."""
    index = tf.range(tf.shape(spectrum)[1])
    # Every bin stands for itself and its mirror image, but DC and (even lengths) Nyquist.
    single = (index == 0) | (2 * index == samples)
    weights = tf.where(single, 1.0, 2.0) / tf.cast(samples, tf.float32) ** 2
    return tf.reduce_sum(tf.square(tf.abs(spectrum)) * weights, axis=1, keepdims=True)


def _noise_amplitudes(frequencies_hz: tf.Tensor, sample_rate: int) -> tf.Tensor:
    """float32 [len(NOISE_COLOURS), bins]: amplitude spectra, in NOISE_COLOURS order, 0 at DC
    and Nyquist."""
    f = tf.maximum(frequencies_hz, 20.0) / 1000.0
    # Long-term speech spectrum: power density about flat from 100 to 500 Hz, falling
    # 9 dB/octave above and 12 dB/octave below (the shape of Byrne et al. 1994's LTASS).
    speech_power = 1.0 / ((1.0 + tf.pow(f / 0.5, 3.0)) * (1.0 + tf.pow(0.1 / f, 4.0)))
    amplitudes = tf.stack([tf.ones_like(f), tf.math.rsqrt(f), 1.0 / f, tf.sqrt(speech_power)])
    inside = (frequencies_hz > 0) & (frequencies_hz < sample_rate / 2)
    return amplitudes * tf.cast(inside, tf.float32)


def _noise_spectra(seeds: tf.Tensor, colours: tf.Tensor, samples: int | tf.Tensor,
                   sample_rate: int) -> tf.Tensor:
    """complex64 [rows, samples // 2 + 1]: the rfft of `coloured_noise`."""
    phases = (2.0 * np.pi) * _uniforms(seeds, _NOISE_KEYS, samples // 2 + 1)
    amplitudes = tf.gather(_noise_amplitudes(_bin_frequencies(samples, sample_rate),
                                             sample_rate), colours)
    amplitudes *= tf.math.rsqrt(_spectral_power(amplitudes, samples))
    return tf.complex(amplitudes * tf.cos(phases), amplitudes * tf.sin(phases))


def coloured_noise(seeds: tf.Tensor, colours: tf.Tensor, length: int | tf.Tensor,
                   sample_rate: int) -> tf.Tensor:
    """Stationary noise with a random phase spectrum, one realisation and colour per row.

    Args:
      seeds: int [rows, 2], one stateless seed per row.
      colours: int32 [rows], indices into `AugmentParams.NOISE_COLOURS`: white (flat), pink
        (-3 dB/octave), brown (-6 dB/octave, both flat under 20 Hz) or speech-shaped.
      length: samples per row.
      sample_rate: in Hz.

    Returns:
      float32 [rows, length], mean square 1 in every row, periodic in `length`.
    """
    return tf.signal.irfft(_noise_spectra(seeds, colours, length, sample_rate), [length])


def add_noise(clips: tf.Tensor, noise: tf.Tensor, snr_db: tf.Tensor) -> tf.Tensor:
    """Adds unit-power noise at `snr_db` under each row's mean power.

    Args:
      clips: float32 [rows, samples].
      noise: float32 [rows, samples], mean square 1.
      snr_db: float32 [rows].

    Returns:
      float32 [rows, samples].
    """
    noise_power = _power(clips) * tf.pow(10.0, -snr_db[:, tf.newaxis] / 10.0)
    return clips + tf.sqrt(noise_power) * noise


def synthetic_impulse_responses(seeds: tf.Tensor, rt60_seconds: tf.Tensor, drr_db: tf.Tensor,
                                length: int | tf.Tensor, sample_rate: int) -> tf.Tensor:
    """Room impulse responses: a direct path of 1 at sample 0, then exponentially decaying noise.

    Args:
      seeds: int [rows, 2], one stateless seed per row.
      rt60_seconds: float32 [rows]: the time the tail's energy takes to fall 60 dB.
      drr_db: float32 [rows]: direct-to-reverberant energy ratio.
      length: samples.
      sample_rate: in Hz.

    Returns:
      float32 [rows, length].
    """
    # White noise straight from the hash: uniform, not Gaussian, which a decay cannot tell.
    tail = _uniforms(seeds, _NOISE_KEYS, length)[:, 1:] - 0.5
    seconds = tf.range(1, length, dtype=tf.float32)[tf.newaxis, :] / sample_rate
    # Energy falls 60 dB in RT60, so amplitude by 10**-3: exp(-3 ln(10) t / RT60).
    tail *= tf.exp(seconds * (-3.0 * math.log(10.0) / rt60_seconds[:, tf.newaxis]))
    tail_energy = tf.reduce_sum(tf.square(tail), axis=1, keepdims=True)
    tail *= tf.sqrt(tf.pow(10.0, -drr_db[:, tf.newaxis] / 10.0) / tail_energy)
    return tf.concat([tf.ones_like(tail[:, :1]), tail], axis=1)


def reverberate(clips: tf.Tensor, impulse_responses: tf.Tensor) -> tf.Tensor:
    """Circular convolution over the window's length (see `_circular_filter`), aligned with the
    direct path.

    Args:
      clips: float32 [rows, samples].
      impulse_responses: float32 [rows, length], length <= samples.

    Returns:
      float32 [rows, samples].
    """
    return _circular_filter(clips, tf.signal.rfft(impulse_responses, [_samples(clips)]))


def microphone_response(frequencies_hz: tf.Tensor, draws: dict[str, tf.Tensor]) -> tf.Tensor:
    """A microphone's magnitude response: tilt, shelves, peaking bands, high- and low-pass.

    Args:
      frequencies_hz: float32 [bins].
      draws: float32 tensors, [rows] unless noted: tilt_db_per_octave (0 dB at 1 kHz),
        low_shelf_db, low_shelf_hz, high_shelf_db, high_shelf_hz (half the gain in dB at the
        corner), high_pass_hz, low_pass_hz (Butterworth, -3 dB at the corner), eq_gain_db,
        eq_hz, eq_q ([rows, bands]: analogue peaking bands, the gain at the centre).

    Returns:
      float32 [rows, bins]: amplitude gain.
    """
    f2 = tf.square(tf.maximum(frequencies_hz, 1.0))[tf.newaxis, :]
    octaves = tf.math.log(tf.maximum(frequencies_hz, 20.0) / 1000.0)[tf.newaxis, :] / math.log(2.0)
    draw = {name: value[:, tf.newaxis] for name, value in draws.items() if value.shape.rank == 1}
    response_db = (draw["tilt_db_per_octave"] * octaves
                   + draw["low_shelf_db"] / (1.0 + f2 / tf.square(draw["low_shelf_hz"]))
                   + draw["high_shelf_db"] / (1.0 + tf.square(draw["high_shelf_hz"]) / f2))
    high_pass = tf.pow(tf.square(draw["high_pass_hz"]) / f2, _HIGH_PASS_ORDER)
    low_pass = tf.pow(f2 / tf.square(draw["low_pass_hz"]), _LOW_PASS_ORDER)
    power = 1.0 / ((1.0 + high_pass) * (1.0 + low_pass))
    # |H|^2 of s-domain (s^2 + s A/Q + 1) / (s^2 + s / (A Q) + 1) at s = j f / centre.
    w2 = f2[:, tf.newaxis, :] / tf.square(draws["eq_hz"])[:, :, tf.newaxis]  # [rows, bands, bins]
    a = tf.pow(10.0, draws["eq_gain_db"] / 40.0)[:, :, tf.newaxis]
    q = draws["eq_q"][:, :, tf.newaxis]
    real = tf.square(1.0 - w2)
    power *= tf.reduce_prod((real + w2 * tf.square(a / q)) / (real + w2 / tf.square(a * q)),
                            axis=1)
    return tf.sqrt(power) * tf.exp(response_db * (math.log(10.0) / 20.0))


def _telephone_band(fft_length: int | tf.Tensor) -> tf.Tensor:
    """float32 [fft_length // 2 + 1] at 8 kHz: 1 in 400-3,300 Hz, 0 outside 300-3,400, cosine
    between."""
    f = _bin_frequencies(fft_length, _TELEPHONE_RATE)
    low, high = _TELEPHONE_BAND_HZ
    rise = tf.clip_by_value((f - low) / _TELEPHONE_EDGE_HZ, 0.0, 1.0)
    fall = tf.clip_by_value((high - f) / _TELEPHONE_EDGE_HZ, 0.0, 1.0)
    return 0.25 * (1.0 - tf.cos(np.pi * rise)) * (1.0 - tf.cos(np.pi * fall))


def _quantised_8bit(compressed: tf.Tensor) -> tf.Tensor:
    """A compressed magnitude in [0, 1] on 7 bits (the 8th is the sign), reconstructed at the
    middle of its step, as G.711 does."""
    return (tf.minimum(tf.floor(compressed * 128.0), 127.0) + 0.5) / 128.0


def mu_law_8bit(x: tf.Tensor) -> tf.Tensor:
    """Mu-law (mu = 255) compression, 8-bit quantisation and expansion; x clipped to [-1, 1]."""
    compressed = tf.math.log1p(_MU * tf.minimum(tf.abs(x), 1.0)) / math.log1p(_MU)
    return tf.sign(x) * tf.math.expm1(_quantised_8bit(compressed) * math.log1p(_MU)) / _MU


def a_law_8bit(x: tf.Tensor) -> tf.Tensor:
    """A-law (A = 87.6) compression, 8-bit quantisation and expansion; x clipped to [-1, 1]."""
    magnitude = tf.minimum(tf.abs(x), 1.0)
    scale = 1.0 + math.log(_A)
    compressed = tf.where(magnitude < 1.0 / _A, _A * magnitude / scale,
                          (1.0 + tf.math.log(tf.maximum(_A * magnitude, 1.0))) / scale)
    magnitude = _quantised_8bit(compressed)
    expanded = tf.where(magnitude < 1.0 / scale, magnitude * scale / _A,
                        tf.exp(magnitude * scale - 1.0) / _A)
    return tf.sign(x) * expanded


def telephone(clips: tf.Tensor, a_law: tf.Tensor, sample_rate: int) -> tf.Tensor:
    """A telephone line: 300-3,400 Hz, 8 kHz and 8-bit companding, then back to `sample_rate`.

    Resampling and band-limiting are FFT masks (circular, as `_circular_filter`), so the
    duration and every frequency in the band are kept exactly. The band mask is applied again
    after companding, as a receiver's filter.

    Args:
      clips: float32 [rows, samples].
      a_law: bool [rows]: A-law where true, mu-law elsewhere.
      sample_rate: in Hz, at least 8,000.

    Returns:
      float32 [rows, samples].
    """
    if sample_rate < _TELEPHONE_RATE:
        raise ValueError(f"telephone needs a sample rate of at least {_TELEPHONE_RATE} Hz, "
                         f"got {sample_rate}")
    common = math.gcd(sample_rate, _TELEPHONE_RATE)
    up, down = sample_rate // common, _TELEPHONE_RATE // common
    samples = _samples(clips)
    # Lengths at both rates must be whole: a whole number of `up` (and `down`) blocks.
    blocks = -(-samples // up)
    wide_length, narrow_length = blocks * up, blocks * down
    narrow_bins = narrow_length // 2 + 1
    ratio = down / up
    band = tf.cast(_telephone_band(narrow_length), tf.complex64)
    spectrum = tf.signal.rfft(clips, [wide_length])[:, :narrow_bins]
    narrow = tf.signal.irfft(spectrum * (band * ratio), [narrow_length])
    narrow = _on_rows(a_law, narrow, a_law_8bit)
    narrow = _on_rows(tf.logical_not(a_law), narrow, mu_law_8bit)
    spectrum = tf.signal.rfft(narrow, [narrow_length]) * (band / ratio)
    spectrum = tf.pad(spectrum, [[0, 0], [0, wide_length // 2 + 1 - narrow_bins]])
    return tf.ensure_shape(tf.signal.irfft(spectrum, [wide_length])[:, :samples], clips.shape)


def soft_clip(clips: tf.Tensor, drive_db: tf.Tensor) -> tf.Tensor:
    """tanh saturation: quiet samples pass unchanged, each row's peak lands `drive_db` above the
    knee.

    Args:
      clips: float32 [rows, samples].
      drive_db: float32 [rows].

    Returns:
      float32 [rows, samples].
    """
    knee = tf.math.divide_no_nan(tf.pow(10.0, drive_db[:, tf.newaxis] / 20.0), _peak(clips))
    return tf.math.divide_no_nan(tf.tanh(knee * clips), knee)


def hard_clip(clips: tf.Tensor, level_db: tf.Tensor) -> tf.Tensor:
    """Clips each row at `level_db` relative to its peak.

    Args:
      clips: float32 [rows, samples].
      level_db: float32 [rows], <= 0.

    Returns:
      float32 [rows, samples].
    """
    threshold = _peak(clips) * tf.pow(10.0, level_db[:, tf.newaxis] / 20.0)
    return tf.clip_by_value(clips, -threshold, threshold)


def _on_rows(apply: tf.Tensor, clips: tf.Tensor, transform, *row_values: tf.Tensor) -> tf.Tensor:
    """`transform(chosen clips, *chosen row values)` on the rows where `apply`; the other rows are
    returned untouched and cost nothing."""
    rows = tf.where(apply)
    chosen = [tf.gather_nd(value, rows) for value in (clips, *row_values)]
    return tf.tensor_scatter_nd_update(clips, rows, transform(*chosen))


def _legacy(clips, params: AugmentParams, draws, sample_rate: int):
    """The every-window options: gain in +-gain_db, circular shift, white noise at noise_snr_db."""
    u, noise_seeds = draws[_LEGACY]
    gain, shift = tf.unstack(u, axis=1)
    if params.gain_db:
        clips *= tf.pow(10.0, _between(gain, (-params.gain_db, params.gain_db)) / 20.0)[:, None]
    if params.time_shift_seconds:
        max_shift = int(params.time_shift_seconds * sample_rate)
        shift = tf.cast(tf.floor(_between(shift, (-max_shift, max_shift + 1))), tf.int32)
        samples = tf.shape(clips)[1]
        positions = tf.math.floormod(tf.range(samples)[tf.newaxis, :] - shift[:, tf.newaxis],
                                     samples)
        clips = tf.gather(clips, positions, batch_dims=1)
    if params.noise_snr_db is not None:
        rows = tf.shape(clips)[0]
        noise = coloured_noise(noise_seeds, tf.zeros([rows], tf.int32),
                               _samples(clips), sample_rate)
        clips = add_noise(clips, noise, tf.fill([rows], float(params.noise_snr_db)))
    return clips


def _on_some(apply: tf.Tensor, neutral: tf.Tensor, compute, *row_values: tf.Tensor) -> tf.Tensor:
    """[rows, width]: `compute(*chosen row values)` on the rows where `apply`, the `neutral` row
    ([1, width]) on the others, which cost nothing."""
    rows = tf.where(apply)
    shape = tf.stack([tf.shape(apply)[0], tf.shape(neutral)[1]])
    computed = compute(*[tf.gather_nd(value, rows) for value in row_values])
    return tf.tensor_scatter_nd_update(tf.broadcast_to(neutral, shape), rows, computed)


def _room_responses(params: AugmentParams, seeds, u, samples, sample_rate: int):
    """complex64 [rows, bins]: room transfer functions."""
    length = int(math.ceil(params.room_rt60_seconds[1] * sample_rate))
    # Past the window's length, a tail is more than 60 dB * 0.975 s / RT60 down: dropped.
    length = min(length, samples) if isinstance(samples, int) else tf.minimum(length, samples)
    responses = synthetic_impulse_responses(seeds, _between(u[:, 0], params.room_rt60_seconds),
                                            _between(u[:, 1], params.room_drr_db), length,
                                            sample_rate)
    return tf.signal.rfft(responses, [samples])


def _colour_gains(params: AugmentParams, u, samples, sample_rate: int):
    """float32 [rows, bins]: microphone responses."""
    bands = params.colour_eq_bands
    draws = dict(
        tilt_db_per_octave=_between(u[:, 0], params.colour_tilt_db_per_octave),
        low_shelf_db=_between(u[:, 1], params.colour_shelf_gain_db),
        low_shelf_hz=_log_between(u[:, 2], params.colour_low_shelf_hz),
        high_shelf_db=_between(u[:, 3], params.colour_shelf_gain_db),
        high_shelf_hz=_log_between(u[:, 4], params.colour_high_shelf_hz),
        high_pass_hz=_log_between(u[:, 5], params.colour_high_pass_hz),
        low_pass_hz=_log_between(u[:, 6], params.colour_low_pass_hz),
        eq_gain_db=_between(u[:, 7:7 + bands], params.colour_eq_gain_db),
        eq_hz=_log_between(u[:, 7 + bands:7 + 2 * bands], params.colour_eq_hz),
        eq_q=_between(u[:, 7 + 2 * bands:7 + 3 * bands], params.colour_eq_q))
    bins = samples // 2 + 1
    if not isinstance(samples, int):
        return microphone_response(_bin_frequencies(samples, sample_rate), draws)
    # The response is smooth on a scale of tens of Hz: computed every `step` bins (under
    # _RESPONSE_STEP_HZ apart) and interpolated linearly, it costs a fraction.
    step = max(1, int(_RESPONSE_STEP_HZ * samples / sample_rate))
    knots = -(-bins // step) + 1
    frequencies = tf.range(knots, dtype=tf.float32) * (step * sample_rate / samples)
    response = microphone_response(frequencies, draws)               # [rows, knots]
    fraction = tf.range(step, dtype=tf.float32) / step
    slope = response[:, 1:] - response[:, :-1]
    fine = response[:, :-1, tf.newaxis] + slope[:, :, tf.newaxis] * fraction
    return tf.reshape(fine, [-1, (knots - 1) * step])[:, :bins]


def _noise(params: AugmentParams, seeds, u, signal, samples, sample_rate: int):
    """complex64 [rows, bins]: noise spectra at the drawn SNRs under the signal spectra's."""
    chosen = [AugmentParams.NOISE_COLOURS.index(c) for c in params.noise_colours]
    pick = tf.minimum(tf.cast(u[:, 0] * len(chosen), tf.int32), len(chosen) - 1)
    spectra = _noise_spectra(seeds, tf.gather(chosen, pick), samples, sample_rate)
    snr_db = _between(u[:, 1:2], params.noise_snr_range_db)
    level = tf.sqrt(_spectral_power(signal, samples) * tf.pow(10.0, -snr_db / 10.0))
    return spectra * tf.cast(level, tf.complex64)


def _room_colour_noise(clips, params: AugmentParams, draws, sample_rate: int):
    """Room, then microphone, then noise, each on the rows it reaches. All three are linear and
    circular (see `_circular_filter`), so one FFT pair serves them all and levels come from
    Parseval's theorem."""
    probabilities = {_ROOM: params.room_probability, _COLOUR: params.colour_probability,
                     _NOISE: params.noise_probability}
    stages = {stream: (draws[stream][0][:, 0] < probability, draws[stream][1],
                       draws[stream][0][:, 1:])
              for stream, probability in probabilities.items() if probability}
    if not stages:
        return clips
    reached = tf.reduce_any(tf.stack([apply for apply, _, _ in stages.values()]), axis=0)

    def transform(x, *chosen):
        chosen = dict(zip(stages, zip(*[iter(chosen)] * 3)))
        samples = _samples(x)
        spectrum = tf.signal.rfft(x, [samples])
        ones = tf.ones([1, samples // 2 + 1])
        if _ROOM in chosen:
            apply, stage_seeds, u = chosen[_ROOM]
            responses = _on_some(apply, tf.cast(ones, tf.complex64), lambda s, v:
                                 _room_responses(params, s, v, samples, sample_rate),
                                 stage_seeds, u)
            wet = spectrum * responses
            # Level matched to the dry window's.
            gain = tf.sqrt(tf.math.divide_no_nan(_power(x), _spectral_power(wet, samples)))
            spectrum = tf.where(apply[:, tf.newaxis], wet * tf.cast(gain, tf.complex64), spectrum)
        if _COLOUR in chosen:
            apply, _, u = chosen[_COLOUR]
            spectrum *= tf.cast(_on_some(apply, ones, lambda v: _colour_gains(
                params, v, samples, sample_rate), u), tf.complex64)
        if _NOISE in chosen:
            apply, stage_seeds, u = chosen[_NOISE]
            spectrum += _on_some(apply, tf.zeros([1, samples // 2 + 1], tf.complex64),
                                 lambda s, v, signal: _noise(params, s, v, signal, samples,
                                                             sample_rate),
                                 stage_seeds, u, spectrum)
        return tf.ensure_shape(tf.signal.irfft(spectrum, [samples]), x.shape)

    return _on_rows(reached, clips, transform,
                    *[value for stage in stages.values() for value in stage])


def _telephone(clips, params: AugmentParams, u, sample_rate: int):
    a_law = [codec == "a_law" for codec in params.telephone_codecs]
    pick = tf.minimum(tf.cast(u[:, 0] * len(a_law), tf.int32), len(a_law) - 1)
    return telephone(clips, tf.gather(a_law, pick), sample_rate)


def _level(clips, params: AugmentParams, draws):
    """Gain (on every row: a gain of 1 leaves a row exact), then soft and hard clipping."""
    def draw(stream, probability):
        u = draws[stream][0]
        return u[:, :1] < probability, u[:, 1]

    if params.level_gain_probability:
        apply, u = draw(_GAIN, params.level_gain_probability)
        gain_db = _between(u[:, tf.newaxis], params.level_gain_db)
        clips *= tf.where(apply, tf.pow(10.0, gain_db / 20.0), 1.0)
    if params.soft_clip_probability:
        apply, u = draw(_SOFT_CLIP, params.soft_clip_probability)
        clips = _on_rows(apply[:, 0], clips, lambda x, v: soft_clip(
            x, _between(v, params.soft_clip_drive_db)), u)
    if params.hard_clip_probability:
        apply, u = draw(_HARD_CLIP, params.hard_clip_probability)
        clips = _on_rows(apply[:, 0], clips, lambda x, v: hard_clip(
            x, _between(v, params.hard_clip_level_db)), u)
    return clips


# No data-dependent Python control flow: autograph would only add seconds to every trace.
@tf.autograph.experimental.do_not_convert
def augment_batch(clips: tf.Tensor, params: AugmentParams, seeds: tf.Tensor,
                  sample_rate: int) -> tf.Tensor:
    """Recording conditions, drawn window by window: room, microphone, noise, gain, clipping,
    telephone line and DC offset, in that order. Nothing shifts pitch or formants.

    The every-window options (`gain_db`, `time_shift_seconds`, `noise_snr_db`) come first. Each
    stage reaches a window with its own probability; a window no stage reaches is returned
    bit for bit.

    Args:
      clips: float32 [batch, samples], DC-free windows.
      params: probabilities and ranges.
      seeds: int [batch, 2], one stateless seed per window: its result depends on its seed only.
      sample_rate: of the clips, in Hz.

    Returns:
      float32 [batch, samples].
    """
    # Each stream: whether the stage reaches a window, then its strengths.
    counts = {_LEGACY: 2, _ROOM: 3, _COLOUR: 8 + 3 * params.colour_eq_bands, _NOISE: 3,
              _GAIN: 2, _SOFT_CLIP: 2, _HARD_CLIP: 2, _TELEPHONE: 2, _DC_OFFSET: 2}
    used = {_LEGACY: params.gain_db or params.time_shift_seconds
            or params.noise_snr_db is not None,
            _ROOM: params.room_probability, _COLOUR: params.colour_probability,
            _NOISE: params.noise_probability, _GAIN: params.level_gain_probability,
            _SOFT_CLIP: params.soft_clip_probability, _HARD_CLIP: params.hard_clip_probability,
            _TELEPHONE: params.telephone_probability, _DC_OFFSET: params.dc_offset_probability}
    counts = {stream: count for stream, count in counts.items() if used[stream]}
    if not counts:
        return clips
    draws = _draws(seeds, counts)
    if _LEGACY in draws:
        clips = _legacy(clips, params, draws, sample_rate)
    clips = _room_colour_noise(clips, params, draws, sample_rate)
    clips = _level(clips, params, draws)
    if params.telephone_probability:
        u = draws[_TELEPHONE][0]
        clips = _on_rows(u[:, 0] < params.telephone_probability, clips,
                         lambda x, u: _telephone(x, params, u, sample_rate), u[:, 1:])
    if params.dc_offset_probability:
        u = draws[_DC_OFFSET][0]
        offset = _between(u[:, 1:], params.dc_offset_full_scale)
        clips += tf.where(u[:, :1] < params.dc_offset_probability, offset, 0.0)
    return clips
