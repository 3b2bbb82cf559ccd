"""Held-out recording conditions: degraded copies of a clip table, for robustness evaluation.

Each condition is a pure numpy/scipy function `(waveform, sample_rate, rng) -> ConditionOutput`
and `write_condition_copies` writes a whole table's clips through one of them. They are built
apart from the training augmentations (`speakergender.augment`, on graph, in TF) and differ from
them in shape and settings on purpose, so a score under a condition measures generalisation to
that kind of degradation, not recall of the exact transform seen in training:

- `clean`: the clip as it is, 16-bit PCM at its own rate; the reference.
- `telephone`: 8 kHz through `scipy.signal.resample_poly`, a line-noise floor 35 dB under the
  speech, an elliptic IIR channel filter (300-3,400 Hz, 0.5 dB ripple, 50 dB stop band, causal,
  non-linear phase) and G.711 mu-law coded with the standard's 8-bit segment quantiser; written
  at 8 kHz, so the model's own resampler brings it back. Training band-limits with zero-phase
  FFT masks around an 8 kHz round trip and compands by the continuous mu-law or A-law formula.
- `room`: convolution with an image-source shoebox-room impulse response (discrete specular
  reflections, RT60 0.6 s; one of 8 rooms 4-8 m long, source and mic 1-3 m apart), at the
  input's RMS and length. Training's reverb IRs are exponentially decaying noise, which has no
  early reflections and no room geometry.
- `noise`: machine noise at 10 dB SNR against the speech's active level: mains hum (50 or 60 Hz
  with harmonics), a resonant AR(2) fan rumble and amplitude-modulated band-pass hiss. Training
  adds stationary white/pink/brown/speech-shaped noise; none of these is tonal or modulated. No
  speech is used as noise: it would carry a gender of its own.
- `resampled_44k`: 44.1 kHz, 24-bit PCM, stereo with a 0.5 dB channel imbalance.
- `resampled_48k`: 48 kHz, 32-bit float, mono. Training only ever sees the corpus's own rate
  and 16-bit mono, so these two test the front end's decoder, mix-down and resampler.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

logger = logging.getLogger(__name__)

# Active speech level: frames within this much of the loud end of the clip count as speech.
ACTIVE_FRAME_SECONDS = 0.02
ACTIVE_THRESHOLD_DB = 20.0
# The loud end is this percentile of frame powers, so one click does not set it.
ACTIVE_REFERENCE_PERCENTILE = 95.0
# Louder outputs are scaled down to this peak rather than clipped.
PEAK_LIMIT = 0.99

TELEPHONE_RATE_HZ = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_FILTER_ORDER = 5
TELEPHONE_RIPPLE_DB = 0.5
TELEPHONE_STOPBAND_DB = 50.0
TELEPHONE_LINE_SNR_DB = 35.0
# Speech enters the codec at -20 dBm0, the nominal telephone speech level; 0 dBm0 is a sine
# 3.17 dB below the codec's full-scale sine.
TELEPHONE_SPEECH_RMS = 10.0 ** ((-20.0 - 3.17 - 3.01) / 20.0)

ROOM_RT60_SECONDS = 0.6
ROOM_IR_SECONDS = 0.7
ROOM_BANK_SIZE = 8
ROOM_DIMS_RANGE_M = ((4.0, 3.0, 2.5), (8.0, 6.0, 3.3))
ROOM_WALL_MARGIN_M = 0.5
ROOM_SOURCE_MIC_RANGE_M = (1.0, 3.0)
SPEED_OF_SOUND_M_PER_S = 343.0
# Allen & Berkley high-pass the image-source IR: its all-positive impulses add up to a DC gain.
ROOM_HIGHPASS_HZ = 50.0
_ROOM_BANK_SEED = 20240600
_ROOM_CALIBRATION_STEPS = 4

NOISE_SNR_DB = 10.0
MAINS_HZ = (50.0, 60.0)
HUM_HARMONICS = 8
RUMBLE_CENTRE_HZ = (60.0, 200.0)
RUMBLE_BANDWIDTH_HZ = 150.0
HISS_BAND_HZ = (1000.0, 5000.0)
HISS_MODULATION_HZ = (6.0, 20.0)

RESAMPLED_44K_BALANCE_DB = 0.5

# Soundfile subtypes the conditions write.
PCM_16 = "PCM_16"
PCM_24 = "PCM_24"
FLOAT = "FLOAT"


class ConditionOutput(NamedTuple):
    """A degraded clip and how to write it.

    Attributes:
      waveform: float32 [<# samples>] or, for stereo, [<# samples>, <# channels>].
      sample_rate: of `waveform`, in Hz.
      subtype: the soundfile subtype to write ("PCM_16", "PCM_24" or "FLOAT").
    """

    waveform: np.ndarray
    sample_rate: int
    subtype: str


Condition = Callable[[np.ndarray, int, np.random.Generator], ConditionOutput]


# --- Shared measurements and helpers ------------------------------------------------------------


def active_power(waveform: np.ndarray, sample_rate: int) -> float:
    """Mean power of the clip's speech frames, leaving out its silences.

    Clips carry leading and trailing silence of varying length; a whole-clip mean would set a
    noise level by how much silence a clip has rather than by how loud its speech is.

    Args:
      waveform: float [<# samples>].
      sample_rate: in Hz.

    Returns:
      Mean square over the frames within `ACTIVE_THRESHOLD_DB` of the loud end; 0.0 for a
      silent or empty clip.
    """
    frame_samples = max(1, int(round(ACTIVE_FRAME_SECONDS * sample_rate)))
    frames = len(waveform) // frame_samples
    if frames == 0:
        return float(np.mean(np.square(waveform, dtype=np.float64))) if len(waveform) else 0.0
    # frame_powers has shape [<# frames>]
    frame_powers = np.mean(np.square(
        waveform[:frames * frame_samples].astype(np.float64).reshape(frames, frame_samples)),
        axis=1)
    reference = np.percentile(frame_powers, ACTIVE_REFERENCE_PERCENTILE)
    if reference <= 0.0:
        return 0.0
    active = frame_powers >= reference * 10.0 ** (-ACTIVE_THRESHOLD_DB / 10.0)
    return float(np.mean(frame_powers[active]))


def resample_to(waveform: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling with `scipy.signal.resample_poly`.

    Args:
      waveform: float [<# samples>].
      sample_rate: of `waveform`, in Hz.
      target_rate: in Hz.

    Returns:
      float32 [ceil(<# samples> * target_rate / sample_rate)].
    """
    if sample_rate == target_rate:
        return np.asarray(waveform, np.float32).copy()
    divisor = math.gcd(int(sample_rate), int(target_rate))
    return signal.resample_poly(waveform, target_rate // divisor,
                                sample_rate // divisor).astype(np.float32)


def _limit_peak(waveform: np.ndarray) -> np.ndarray:
    """Scales down a waveform whose peak would clip; others pass unchanged."""
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    return waveform * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else waveform


# --- clean ----------------------------------------------------------------------------------------


def clean(waveform: np.ndarray, sample_rate: int, rng: np.random.Generator) -> ConditionOutput:
    """The clip unchanged, as 16-bit PCM at its own rate."""
    del rng  # Nothing random.
    return ConditionOutput(np.asarray(waveform, np.float32), sample_rate, PCM_16)


# --- telephone ------------------------------------------------------------------------------------

_MULAW_BIAS = 0x84
_MULAW_CLIP = 8159
# Upper ends of the eight segments, in 14-bit units after the bias is added.
_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def mulaw_encode(waveform: np.ndarray) -> np.ndarray:
    """G.711 mu-law encoding by the standard's segment quantiser (as in Sun's reference g711.c).

    Args:
      waveform: float [<# samples>] in [-1, 1]; full scale is 16-bit linear 32768, and louder
        samples saturate.

    Returns:
      uint8 [<# samples>] codes, bit-inverted as transmitted (0xFF is +0, 0x80 is +full scale).
    """
    linear16 = np.clip(np.round(np.asarray(waveform, np.float64) * 32768.0), -32768, 32767)
    # G.711 works on 14-bit linear samples; the arithmetic shift floors as the C code's does.
    linear14 = linear16.astype(np.int32) >> 2
    mask = np.where(linear14 < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(linear14), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude, side="left")
    mantissa = (magnitude >> (segment + 1)) & 0xF
    # Past the last segment (only full scale, after the bias) the code saturates at 0x7F.
    code = np.where(segment >= len(_MULAW_SEGMENT_ENDS), 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """G.711 mu-law decoding, the inverse of `mulaw_encode`.

    Args:
      codes: uint8 [<# samples>].

    Returns:
      float32 [<# samples>], 16-bit linear values / 32768 (peak 32124 / 32768).
    """
    inverted = ~np.asarray(codes, np.uint8).astype(np.int32) & 0xFF
    segment = (inverted & 0x70) >> 4
    magnitude = (((inverted & 0x0F) << 3) + _MULAW_BIAS) << segment
    linear16 = np.where(inverted & 0x80, _MULAW_BIAS - magnitude, magnitude - _MULAW_BIAS)
    return (linear16 / 32768.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def telephone_filter_sos() -> np.ndarray:
    """The telephone channel filter at 8 kHz: an elliptic band-pass, float64 [<# sections>, 6].

    Elliptic, for band edges as steep as the G.712 channel-filter mask asks; a 4th-order
    Butterworth would leave 3.5 kHz only 8 dB down.
    """
    return signal.ellip(TELEPHONE_FILTER_ORDER, TELEPHONE_RIPPLE_DB, TELEPHONE_STOPBAND_DB,
                        TELEPHONE_BAND_HZ, btype="bandpass", fs=TELEPHONE_RATE_HZ, output="sos")


def telephone(waveform: np.ndarray, sample_rate: int,
              rng: np.random.Generator) -> ConditionOutput:
    """A narrowband telephone call: 8 kHz, line noise, channel filter, G.711 mu-law.

    The speech is brought to the codec's nominal level and the gain is undone after decoding,
    so the output keeps the input's loudness and differs from it only by the channel.

    Args:
      waveform: float32 [<# samples>].
      sample_rate: of `waveform`, in Hz.
      rng: draws the line noise.

    Returns:
      float32 [<# samples at 8 kHz>], 8000, "PCM_16".
    """
    narrow = resample_to(waveform, sample_rate, TELEPHONE_RATE_HZ).astype(np.float64)
    level = math.sqrt(active_power(narrow, TELEPHONE_RATE_HZ))
    if level == 0.0:
        return ConditionOutput(np.zeros(len(narrow), np.float32), TELEPHONE_RATE_HZ, PCM_16)
    gain = TELEPHONE_SPEECH_RMS / level
    line = narrow * gain + rng.standard_normal(len(narrow)) * (
        TELEPHONE_SPEECH_RMS * 10.0 ** (-TELEPHONE_LINE_SNR_DB / 20.0))
    channel = signal.sosfilt(telephone_filter_sos(), line)
    decoded = mulaw_decode(mulaw_encode(channel)) / gain
    return ConditionOutput(_limit_peak(decoded).astype(np.float32), TELEPHONE_RATE_HZ, PCM_16)


# --- room -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShoeboxRoom:
    """A rectangular room with a source and a microphone in it; corners at the origin.

    Attributes:
      dims_m: length, width, height in metres.
      source_m: source position (x, y, z) in metres.
      mic_m: microphone position (x, y, z) in metres.
    """

    dims_m: tuple[float, float, float]
    source_m: tuple[float, float, float]
    mic_m: tuple[float, float, float]

    @property
    def volume_m3(self) -> float:
        return float(np.prod(self.dims_m))

    @property
    def surface_m2(self) -> float:
        length, width, height = self.dims_m
        return 2.0 * (length * width + length * height + width * height)


def draw_room(rng: np.random.Generator) -> ShoeboxRoom:
    """A room from `ROOM_DIMS_RANGE_M`, source and mic 1-3 m apart, away from the walls.

    Args:
      rng: draws the dimensions and positions.

    Returns:
      The room.
    """
    low, high = (np.array(bound) for bound in ROOM_DIMS_RANGE_M)
    dims = rng.uniform(low, high)
    # Heights of a speaker's mouth and a microphone on a desk or stand.
    inner_low = np.array([ROOM_WALL_MARGIN_M, ROOM_WALL_MARGIN_M, 1.0])
    inner_high = np.array([dims[0] - ROOM_WALL_MARGIN_M, dims[1] - ROOM_WALL_MARGIN_M, 1.8])
    nearest, farthest = ROOM_SOURCE_MIC_RANGE_M
    while True:
        source, mic = rng.uniform(inner_low, inner_high), rng.uniform(inner_low, inner_high)
        if nearest <= np.linalg.norm(source - mic) <= farthest:
            return ShoeboxRoom(tuple(dims.tolist()), tuple(source.tolist()), tuple(mic.tolist()))


def sabine_reflection(room: ShoeboxRoom, rt60_seconds: float) -> float:
    """Wall pressure-reflection coefficient for an RT60, by Sabine's formula.

    Args:
      room: the room.
      rt60_seconds: the reverberation time to reach.

    Returns:
      sqrt(1 - alpha), with absorption alpha = 0.161 V / (S RT60), in (0, 1).
    """
    absorption = 0.161 * room.volume_m3 / (room.surface_m2 * rt60_seconds)
    return math.sqrt(1.0 - min(absorption, 0.99))


def _images(room: ShoeboxRoom, max_distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Image sources within a distance of the microphone (Allen & Berkley's lattice).

    Along each axis the images sit at 2 n L + (1 - 2 q) s, for integer n and q in {0, 1}, after
    |n - q| + |n| wall reflections.

    Returns:
      float64 [<# images>] distances to the mic in metres and int [<# images>] reflection counts.
    """
    offsets, counts = [], []
    for length, source, mic in zip(room.dims_m, room.source_m, room.mic_m):
        reach = int(math.ceil(max_distance_m / (2.0 * length))) + 1
        n = np.arange(-reach, reach + 1)[:, np.newaxis]
        q = np.array([0, 1])[np.newaxis, :]
        offsets.append((2.0 * n * length + (1 - 2 * q) * source - mic).ravel())
        counts.append((np.abs(n - q) + np.abs(n)).ravel())
    # distances and reflections have shape [<# x images>, <# y images>, <# z images>]
    distances = np.sqrt(offsets[0][:, None, None] ** 2 + offsets[1][None, :, None] ** 2
                        + offsets[2][None, None, :] ** 2)
    reflections = counts[0][:, None, None] + counts[1][None, :, None] + counts[2][None, None, :]
    inside = distances < max_distance_m
    return distances[inside], reflections[inside]


def _impulse_train(distances_m: np.ndarray, reflections: np.ndarray, reflection: float,
                   sample_rate: int, ir_samples: int) -> np.ndarray:
    """Sums the images into an IR, delays rounded to whole samples, direct path at sample 0."""
    delays = np.round((distances_m - distances_m.min()) / SPEED_OF_SOUND_M_PER_S * sample_rate)
    amplitudes = reflection ** reflections / (4.0 * np.pi * distances_m)
    train = np.bincount(delays.astype(np.int64), weights=amplitudes, minlength=ir_samples)
    highpass = signal.butter(2, ROOM_HIGHPASS_HZ, btype="highpass", fs=sample_rate, output="sos")
    return signal.sosfilt(highpass, train[:ir_samples])


def schroeder_rt60_seconds(impulse_response: np.ndarray, sample_rate: int) -> float:
    """RT60 from the -5 to -25 dB slope of the Schroeder backward-integrated decay (T20).

    Args:
      impulse_response: float [<# samples>].
      sample_rate: in Hz.

    Returns:
      The time a 60 dB decay would take at the fitted slope, in seconds.
    """
    energy = np.cumsum(np.square(impulse_response[::-1], dtype=np.float64))[::-1]
    decay_db = 10.0 * np.log10(np.maximum(energy / energy[0], 1e-30))
    fitted = (decay_db <= -5.0) & (decay_db >= -25.0)
    times = np.flatnonzero(fitted) / sample_rate
    slope_db_per_s = np.polyfit(times, decay_db[fitted], 1)[0]
    return -60.0 / slope_db_per_s


def room_impulse_response(room: ShoeboxRoom, sample_rate: int,
                          rt60_seconds: float = ROOM_RT60_SECONDS,
                          ir_seconds: float = ROOM_IR_SECONDS) -> np.ndarray:
    """Image-source IR of a room whose walls are set for a target RT60.

    Sabine's formula gives the starting reflection coefficient. An image-source room with
    uniform walls decays more slowly than Sabine (or Eyring) predicts, since paths along the
    long axis meet fewer walls, so the coefficient is refined by measuring the IR's own T20
    and scaling log(reflection) by measured / target RT60, which converges in a few steps.

    Args:
      room: geometry.
      sample_rate: in Hz.
      rt60_seconds: target reverberation time.
      ir_seconds: IR length; the IR starts with the direct path.

    Returns:
      float64 [round(ir_seconds * sample_rate)], unit energy.
    """
    ir_samples = int(round(ir_seconds * sample_rate))
    direct_m = float(np.linalg.norm(np.subtract(room.source_m, room.mic_m)))
    distances, reflections = _images(room, direct_m + SPEED_OF_SOUND_M_PER_S * ir_seconds)
    log_reflection = math.log(sabine_reflection(room, rt60_seconds))
    for _ in range(_ROOM_CALIBRATION_STEPS):
        ir = _impulse_train(distances, reflections, math.exp(log_reflection), sample_rate,
                            ir_samples)
        log_reflection *= schroeder_rt60_seconds(ir, sample_rate) / rt60_seconds
    ir = _impulse_train(distances, reflections, math.exp(log_reflection), sample_rate, ir_samples)
    return ir / np.sqrt(np.sum(np.square(ir)))


@functools.lru_cache(maxsize=4)
def room_bank(sample_rate: int) -> tuple[np.ndarray, ...]:
    """`ROOM_BANK_SIZE` room IRs at one rate, from a fixed seed; built once per rate.

    Each IR takes a few tenths of a second to calibrate, too slow to make one per clip.

    Args:
      sample_rate: in Hz.

    Returns:
      `ROOM_BANK_SIZE` float64 [<# IR samples>] arrays (read-only).
    """
    rng = np.random.default_rng(_ROOM_BANK_SEED)
    bank = []
    for _ in range(ROOM_BANK_SIZE):
        ir = room_impulse_response(draw_room(rng), sample_rate)
        ir.setflags(write=False)
        bank.append(ir)
    return tuple(bank)


def room(waveform: np.ndarray, sample_rate: int, rng: np.random.Generator) -> ConditionOutput:
    """Reverberation by one of the bank's rooms (RT60 0.6 s), at the input's RMS and length.

    Args:
      waveform: float32 [<# samples>].
      sample_rate: of `waveform`, in Hz.
      rng: picks the room.

    Returns:
      float32 [<# samples>] (the tail past the clip's end is cut), sample_rate, "PCM_16".
    """
    bank = room_bank(sample_rate)
    ir = bank[int(rng.integers(len(bank)))]
    wet = signal.oaconvolve(np.asarray(waveform, np.float64), ir)[:len(waveform)]
    wet_rms = math.sqrt(float(np.mean(np.square(wet)))) if len(wet) else 0.0
    dry_rms = math.sqrt(float(np.mean(np.square(waveform, dtype=np.float64)))) if len(wet) else 0.0
    if wet_rms > 0.0:
        wet *= dry_rms / wet_rms
    return ConditionOutput(_limit_peak(wet).astype(np.float32), sample_rate, PCM_16)


# --- noise ----------------------------------------------------------------------------------------


def _unit_power(noise: np.ndarray) -> np.ndarray:
    return noise / math.sqrt(float(np.mean(np.square(noise))))


def _hum(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: a 50 or 60 Hz fundamental and harmonics falling roughly as 1/sqrt(k)."""
    mains_hz = float(rng.choice(MAINS_HZ))
    # Harmonics as powers of one complex phasor: a multiply each instead of a sine each.
    fundamental = np.exp(2j * np.pi * mains_hz / sample_rate * np.arange(samples))
    harmonic = np.ones(samples, np.complex128)
    hum = np.zeros(samples)
    for k in range(1, HUM_HARMONICS + 1):
        if k * mains_hz >= 0.45 * sample_rate:
            break
        harmonic *= fundamental
        amplitude = rng.uniform(0.5, 1.0) / math.sqrt(k)
        hum += amplitude * (harmonic * np.exp(1j * rng.uniform(0, 2 * np.pi))).imag
    return hum


def _rumble(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Fan rumble: white noise through a resonant AR(2) filter, its start-up transient dropped."""
    centre_hz = rng.uniform(*RUMBLE_CENTRE_HZ)
    radius = math.exp(-math.pi * RUMBLE_BANDWIDTH_HZ / sample_rate)
    denominator = [1.0, -2.0 * radius * math.cos(2 * math.pi * centre_hz / sample_rate),
                   radius ** 2]
    warmup = int(0.1 * sample_rate)
    return signal.lfilter([1.0], denominator, rng.standard_normal(samples + warmup))[warmup:]


@functools.lru_cache(maxsize=8)
def _hiss_filter_sos(sample_rate: int) -> np.ndarray:
    """Band-pass for the hiss, its top edge kept below the Nyquist frequency."""
    high_hz = min(HISS_BAND_HZ[1], 0.45 * sample_rate)
    return signal.butter(2, (HISS_BAND_HZ[0], high_hz), btype="bandpass", fs=sample_rate,
                         output="sos")


def _modulated_hiss(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Band-pass hiss whose level flutters at 6-20 Hz, as a running machine's does."""
    hiss = signal.sosfilt(_hiss_filter_sos(sample_rate), rng.standard_normal(samples))
    times = np.arange(samples) / sample_rate
    depth = rng.uniform(0.5, 0.9)
    flutter = 1.0 + depth * np.sin(2 * np.pi * rng.uniform(*HISS_MODULATION_HZ) * times
                                   + rng.uniform(0, 2 * np.pi))
    return hiss * flutter


def machine_noise(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Hum, rumble and modulated hiss mixed with random weights; no speech in it.

    The hum's harmonics (100-180 Hz) fall in the male pitch range, which makes it a hard test
    for a model that reads pitch from the lowest strong harmonic.

    Args:
      samples: length.
      sample_rate: in Hz.
      rng: draws everything.

    Returns:
      float64 [samples] with unit mean power.
    """
    if samples == 0:
        return np.zeros(0)
    hum_weight = rng.uniform(0.2, 0.35)
    rumble_weight = rng.uniform(0.3, 0.45)
    hiss_weight = 1.0 - hum_weight - rumble_weight
    mix = (math.sqrt(hum_weight) * _unit_power(_hum(samples, sample_rate, rng))
           + math.sqrt(rumble_weight) * _unit_power(_rumble(samples, sample_rate, rng))
           + math.sqrt(hiss_weight) * _unit_power(_modulated_hiss(samples, sample_rate, rng)))
    return _unit_power(mix)


def add_noise_at_snr(speech: np.ndarray, noise: np.ndarray, sample_rate: int,
                     snr_db: float) -> np.ndarray:
    """Speech plus noise scaled to an SNR against the speech's active level.

    Args:
      speech: float [<# samples>].
      noise: float [<# samples>]; its mean power over the whole clip is what is scaled.
      sample_rate: in Hz.
      snr_db: active speech power / noise power, in dB.

    Returns:
      float64 [<# samples>]; scaled down as a whole (SNR kept) if it would clip.
    """
    speech = np.asarray(speech, np.float64)
    noise_power = float(np.mean(np.square(noise))) if len(noise) else 0.0
    if noise_power == 0.0:
        return speech.copy()
    target_power = active_power(speech, sample_rate) * 10.0 ** (-snr_db / 10.0)
    return _limit_peak(speech + noise * math.sqrt(target_power / noise_power))


def noise(waveform: np.ndarray, sample_rate: int, rng: np.random.Generator) -> ConditionOutput:
    """Machine noise at `NOISE_SNR_DB` against the speech's active level.

    Args:
      waveform: float32 [<# samples>].
      sample_rate: of `waveform`, in Hz.
      rng: draws the noise.

    Returns:
      float32 [<# samples>], sample_rate, "PCM_16".
    """
    noisy = add_noise_at_snr(waveform, machine_noise(len(waveform), sample_rate, rng),
                             sample_rate, NOISE_SNR_DB)
    return ConditionOutput(noisy.astype(np.float32), sample_rate, PCM_16)


# --- resampled ------------------------------------------------------------------------------------


def resampled_44k(waveform: np.ndarray, sample_rate: int,
                  rng: np.random.Generator) -> ConditionOutput:
    """44.1 kHz 24-bit stereo, one channel 0.5 dB louder than the other.

    The imbalance is split +-0.25 dB around the input, so the channels' mean is within 0.01 %
    of the input while a reader that keeps one channel still sees a (harmless) level change.

    Args:
      waveform: float32 [<# samples>].
      sample_rate: of `waveform`, in Hz.
      rng: picks which channel is louder.

    Returns:
      float32 [<# samples at 44.1 kHz>, 2], 44100, "PCM_24".
    """
    resampled = resample_to(waveform, sample_rate, 44100)
    half_gain = 10.0 ** (RESAMPLED_44K_BALANCE_DB / 40.0)
    gains = np.array([half_gain, 1.0 / half_gain])
    if rng.integers(2):
        gains = gains[::-1]
    # stereo has shape [<# samples>, 2]
    stereo = _limit_peak(resampled[:, np.newaxis] * gains[np.newaxis, :])
    return ConditionOutput(stereo.astype(np.float32), 44100, PCM_24)


def resampled_48k(waveform: np.ndarray, sample_rate: int,
                  rng: np.random.Generator) -> ConditionOutput:
    """48 kHz, 32-bit float, mono.

    Returns:
      float32 [<# samples at 48 kHz>], 48000, "FLOAT".
    """
    del rng  # Nothing random.
    return ConditionOutput(resample_to(waveform, sample_rate, 48000), 48000, FLOAT)


# --- registry and batch writing -------------------------------------------------------------------

CONDITION_FUNCTIONS: Mapping[str, Condition] = types.MappingProxyType({
    "clean": clean,
    "telephone": telephone,
    "room": room,
    "noise": noise,
    "resampled_44k": resampled_44k,
    "resampled_48k": resampled_48k,
})
CONDITIONS: tuple[str, ...] = tuple(CONDITION_FUNCTIONS)
HELD_OUT_CONDITIONS: tuple[str, ...] = tuple(name for name in CONDITIONS if name != "clean")


def condition_function(name: str) -> Condition:
    """The function of a named condition.

    Raises:
      ValueError: an unknown name.
    """
    if name not in CONDITION_FUNCTIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of {list(CONDITIONS)}")
    return CONDITION_FUNCTIONS[name]


def _path_key(path: str) -> str:
    """A stable hex digest of a source path, naming its copy and keying its random draws."""
    return hashlib.sha1(os.path.abspath(path).encode("utf-8")).hexdigest()[:16]


def _clip_rng(seed: int, condition: str, path_key: str) -> np.random.Generator:
    """The draws for one clip under one condition: same seed and file, same draws."""
    return np.random.default_rng(
        [seed, CONDITIONS.index(condition), int(path_key, 16)])


def _read_mono(path: str) -> tuple[np.ndarray, int]:
    """float32 [<# samples>] (channels averaged) and the sample rate."""
    channels, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    if channels.shape[0] == 0:
        raise ValueError("no samples")
    return channels.mean(axis=1), int(sample_rate)


def _write(path: Path, output: ConditionOutput) -> None:
    """Writes a WAV; integer subtypes are quantised here, with x 32768 scaling and rounding.

    Soundfile would scale floats by 32767 on writing but by 1/32768 on reading, and truncate for
    24 bits; integers give exact round trips (G.711 levels stay on their grid).
    """
    waveform = output.waveform
    if output.subtype == PCM_16:
        data = np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)
    elif output.subtype == PCM_24:
        # libsndfile keeps the top 24 bits of int32 samples.
        data = (np.clip(np.round(waveform * 8388608.0), -8388608, 8388607)
                .astype(np.int32) << 8)
    else:
        data = np.asarray(waveform, np.float32)
    sf.write(str(path), data, output.sample_rate, subtype=output.subtype, format="WAV")


def write_condition_copies(table: pd.DataFrame, condition: str, out_dir: Path,
                           seed: int) -> pd.DataFrame:
    """Writes every clip of a table through one condition.

    Copies are named `<16 hex digits of a hash of the source path>_<source stem>.wav`, so
    sources that share a file name in different folders do not collide. Each clip's random
    draws come from (seed, condition, that hash), so a copy is the same whatever the table's
    order or subset.

    Args:
      table: a clip table with a `path` column (e.g. `corpora.Corpus.table`).
      condition: one of `CONDITIONS`.
      out_dir: folder for the copies (created).
      seed: fixes every random draw.

    Returns:
      A copy of `table` without the rows whose file could not be read (each logged as a
      warning), `path` pointing to the copies (absolute str) and a `condition` column.

    Raises:
      ValueError: an unknown condition, or a table without a `path` column.
    """
    function = condition_function(condition)
    if "path" not in table.columns:
        raise ValueError("table lacks a 'path' column")
    out_dir = Path(os.path.abspath(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, new_paths = [], []
    for position, source in enumerate(table["path"].astype(str)):
        try:
            waveform, sample_rate = _read_mono(source)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
            logger.warning("skipping %s under condition %s: cannot read it (%s)",
                           source, condition, error)
            continue
        key = _path_key(source)
        target = out_dir / f"{key}_{Path(source).stem}.wav"
        _write(target, function(waveform, sample_rate, _clip_rng(seed, condition, key)))
        kept.append(position)
        new_paths.append(str(target))
    copies = table.iloc[kept].copy()
    copies["path"] = new_paths
    copies["condition"] = condition
    skipped = len(table) - len(kept)
    if skipped:
        logger.warning("condition %s: %d of %d files skipped", condition, skipped, len(table))
    return copies


def parse_condition_list(text: str) -> tuple[str, ...]:
    """A command line's condition list: "telephone,room" -> ("telephone", "room"); "all" ->
    every held-out condition; "none" or "" -> ().

    Raises:
      ValueError: naming unknown conditions and the known ones.
    """
    if text.strip() == "all":
        return HELD_OUT_CONDITIONS
    names = tuple(name.strip() for name in text.split(",")
                  if name.strip() and name.strip() != "none")
    unknown = [name for name in names if name not in HELD_OUT_CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; choose among "
                         f"{', '.join(HELD_OUT_CONDITIONS)}, 'all' or 'none'")
    return names
