"""speakergender.frontend.wav against soundfile (libsndfile) and hand-built odd and broken files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

import helpers
import wavfiles
from speakergender.frontend import wav
from wavfiles import chunk, fmt_payload, pcm16_wav, riff

SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")

# Traced once each, so the many cases below stay fast.
decode_channels_graph = tf.function(
    wav.decode_wav_channels, input_signature=[tf.TensorSpec([], tf.string)])
try_decode_graph = tf.function(wav.try_decode_wav, input_signature=[tf.TensorSpec([], tf.string)])


def _test_signal(num_samples: int, num_channels: int) -> np.ndarray:
    """Uniform noise in [-1, 1) with full scale, zero and near-zero values at the start."""
    rng = np.random.default_rng(num_channels)
    samples = rng.uniform(-1.0, 1.0, (num_samples, num_channels))
    samples[:4] = np.array([-1.0, 0.0, 1.0 - 2.0**-31, 1e-9])[:, np.newaxis]
    return samples


@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
@pytest.mark.parametrize("num_channels", [1, 2, 3, 6])
@pytest.mark.parametrize("subtype", SUBTYPES)
def test_decode_matches_soundfile(tmp_path, subtype, num_channels, container):
    path = wavfiles.write_wav(tmp_path / "a.wav", _test_signal(500, num_channels), 22050,
                              subtype, container)
    expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
    channels, rate = decode_channels_graph(tf.constant(path.read_bytes()))
    assert int(rate) == expected_rate == 22050
    assert channels.dtype == tf.float32 and channels.shape == (500, num_channels)
    if subtype == "DOUBLE":
        # float64 -> float32 is one rounding; libsndfile rounds the same way.
        np.testing.assert_allclose(channels.numpy(), expected, rtol=2.0**-24, atol=0)
    else:
        assert np.array_equal(channels.numpy(), expected)


def test_a_batch_of_mixed_files_decodes_each_as_soundfile_does(tmp_path):
    """Formats, rates, channel counts and lengths mixed in one batch, with two bad files."""
    files = [("PCM_16", 1, 16000, 300), ("PCM_24", 2, 44100, 700), ("DOUBLE", 3, 8000, 50),
             ("PCM_U8", 6, 22050, 120), ("FLOAT", 1, 48000, 1000)]
    contents, expected = [], []
    for i, (subtype, num_channels, rate, num_samples) in enumerate(files):
        path = wavfiles.write_wav(tmp_path / f"{i}.wav", _test_signal(num_samples, num_channels),
                                  rate, subtype)
        contents.append(path.read_bytes())
        samples, _ = sf.read(path, dtype="float32", always_2d=True)
        expected.append((samples.mean(axis=1), rate))
    contents.insert(2, b"RIFF\x10\x00\x00\x00WAVEjunk")
    contents.append(b"")
    waveforms, lengths, rates, errors = wav.try_decode_wav_batch(tf.constant(contents))
    good = [0, 1, 3, 4, 5]
    assert waveforms.shape == (7, 1000)
    assert [e.decode() for e in errors.numpy()[[2, 6]]] == [wav.ERR_NO_FMT_CHUNK,
                                                           wav.ERR_NOT_RIFF_WAVE]
    assert not any(errors.numpy()[good]) and list(lengths.numpy()[[2, 6]]) == [0, 0]
    for row, (samples, rate) in zip(good, expected):
        assert rates[row] == rate and lengths[row] == len(samples)
        np.testing.assert_allclose(waveforms[row, :len(samples)], samples, rtol=1e-6, atol=1e-7)
        assert not np.any(waveforms[row, len(samples):])  # zero past the end
        # The same as that file decoded on its own.
        alone, alone_rate, _ = wav.try_decode_wav(tf.constant(contents[row]))
        np.testing.assert_array_equal(waveforms[row, :len(samples)], alone)


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_a_batch_of_one_encoding_decodes_each_as_soundfile_does(tmp_path, subtype):
    """The one-encoding path: rows of different lengths, zero past each one's end."""
    contents, expected = [], []
    for i, num_samples in enumerate((300, 41, 1000)):
        path = wavfiles.write_wav(tmp_path / f"{i}.wav", _test_signal(num_samples, 1), 16000,
                                  subtype)
        contents.append(path.read_bytes())
        expected.append(sf.read(path, dtype="float32")[0])
    waveforms, lengths, _, errors = wav.try_decode_wav_batch(tf.constant(contents))
    assert not any(errors.numpy()) and lengths.numpy().tolist() == [300, 41, 1000]
    for row, samples in enumerate(expected):
        np.testing.assert_allclose(waveforms[row, :len(samples)], samples, rtol=2.0**-24, atol=0)
        assert not np.any(waveforms[row, len(samples):])


def test_an_empty_batch_decodes_to_nothing():
    waveforms, lengths, rates, errors = wav.try_decode_wav_batch(tf.constant([], tf.string))
    assert waveforms.shape[0] == 0 and lengths.shape == rates.shape == errors.shape == (0,)


PEAK_MEMORY_SCRIPT = """
import resource, sys
import tensorflow as tf
from speakergender.frontend import wav
files = [open(path, "rb").read() for path in sys.argv[1:]]
decode = tf.function(wav.try_decode_wav_batch, input_signature=[tf.TensorSpec([None], tf.string)])
decode(tf.constant(files[:1]))  # warm up: tracing and TensorFlow's own allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
waveforms, lengths, _, errors = decode(tf.constant(files))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert not any(errors.numpy()) and lengths.numpy().tolist() == [200000, 4], lengths
print((after - before) // 1024)
"""


def test_many_channels_beside_a_long_mono_file_cost_no_more_than_their_samples(tmp_path):
    """Downmixing goes row by row: a batch-wide [batch, frames, channels] tensor would hold
    200,000 frames x 512 channels (400 MB a copy) for a 4 KB file beside a long mono one."""
    long_mono = wavfiles.write_wav(tmp_path / "mono.wav", _test_signal(200_000, 1), 16000)
    wide = wavfiles.write_wav(tmp_path / "wide.wav", _test_signal(4, 512), 16000)
    result = helpers.run_python(PEAK_MEMORY_SCRIPT, str(long_mono), str(wide))
    assert int(result.stdout.split()[-1]) < 100  # MB of peak growth
    waveforms, lengths, _, _ = wav.try_decode_wav_batch(
        tf.constant([long_mono.read_bytes(), wide.read_bytes()]))
    expected = sf.read(wide, dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(waveforms[1, :4], expected, rtol=1e-6)
    assert not np.any(waveforms[1, 4:])


def test_float32_passes_through_bit_exact(tmp_path):
    samples = np.array([[0.0, -0.0], [1.5, -7.25], [1e-40, 3.4e38], [0.1, -0.3]], np.float32)
    path = wavfiles.write_wav(tmp_path / "f.wav", samples, 16000, "FLOAT")
    channels, _ = decode_channels_graph(tf.constant(path.read_bytes()))
    assert channels.numpy().tobytes() == samples.tobytes()


def test_decode_wav_eager_downmixes_to_mono(tmp_path):
    samples = _test_signal(300, 2)
    path = wavfiles.write_wav(tmp_path / "s.wav", samples, 44100, "PCM_24")
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    waveform, rate = wav.decode_wav(tf.constant(path.read_bytes()))
    assert int(rate) == 44100 and waveform.shape == (300,)
    np.testing.assert_allclose(waveform.numpy(), expected, rtol=0, atol=1e-7)


def test_downmix_to_mono_averages_channels():
    channels = tf.constant([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(wav.downmix_to_mono(channels).numpy(), [0.0, 0.5])


def test_24_bit_sign_extension():
    values = np.array([0, 1, -1, 2**23 - 1, -(2**23), 0x123456, -0x123456], np.int64)
    raw = b"".join(struct.pack("<i", int(v))[:3] for v in values)
    contents = riff(chunk(b"fmt ", fmt_payload(bits=24)), chunk(b"data", raw))
    channels, _ = decode_channels_graph(tf.constant(contents))
    np.testing.assert_array_equal(channels.numpy()[:, 0], values / 2.0**23)


def test_extensible_reads_tag_from_subformat():
    samples = np.array([0.25, -0.5, 0.125])
    contents = riff(
        chunk(b"fmt ", fmt_payload(wavfiles.WAVE_FORMAT_EXTENSIBLE, bits=16,
                                   extensible_tag=wavfiles.WAVE_FORMAT_PCM)),
        chunk(b"data", wavfiles.pcm16_bytes(samples)))
    channels, _ = decode_channels_graph(tf.constant(contents))
    np.testing.assert_array_equal(channels.numpy()[:, 0], samples)


SAMPLES = np.array([0.5, -0.25, 0.125, -1.0, 0.0])
LIST_CHUNK = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"tests\0")
FACT_CHUNK = chunk(b"fact", struct.pack("<I", len(SAMPLES)))
ODD_CHUNK = chunk(b"junk", b"abc")  # 3 bytes plus a pad byte


ODD_DATA = bytes([192, 96, 144, 0, 128])


@pytest.mark.parametrize("contents, expected", [
    (pcm16_wav(SAMPLES, before_fmt=(LIST_CHUNK, FACT_CHUNK)), SAMPLES),
    (pcm16_wav(SAMPLES, between=(FACT_CHUNK, LIST_CHUNK)), SAMPLES),
    (pcm16_wav(SAMPLES, after_data=(LIST_CHUNK,)), SAMPLES),
    (pcm16_wav(SAMPLES, before_fmt=(ODD_CHUNK,)), SAMPLES),
    (pcm16_wav(SAMPLES, between=(ODD_CHUNK, chunk(b"bext", b"x" * 7))), SAMPLES),
    (pcm16_wav(SAMPLES, before_fmt=(LIST_CHUNK,), data_first=True), SAMPLES),
    # An odd-sized 8-bit data chunk: the pad byte after it is not a sample.
    (riff(chunk(b"fmt ", fmt_payload(bits=8)), chunk(b"data", ODD_DATA), LIST_CHUNK),
     (np.array(list(ODD_DATA)) - 128) / 128.0),
], ids=["list-fact-before-fmt", "fact-list-between", "list-after-data", "odd-chunk-before-fmt",
        "odd-chunks-between", "data-before-fmt", "odd-data-chunk"])
def test_chunk_order_and_unknown_chunks(contents, expected):
    channels, rate, error = try_decode_graph(tf.constant(contents))
    assert error.numpy() == b""
    assert int(rate) == 16000
    np.testing.assert_array_equal(channels.numpy(), expected)


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 96000])
def test_sample_rates(rate):
    channels, decoded_rate = decode_channels_graph(tf.constant(pcm16_wav(SAMPLES, rate=rate)))
    assert int(decoded_rate) == rate
    np.testing.assert_array_equal(channels.numpy()[:, 0], SAMPLES)


def _mulaw_file() -> bytes:
    fmt = fmt_payload(tag=0x0007, bits=8)
    return riff(chunk(b"fmt ", fmt), chunk(b"data", b"\xff" * 10))


GOOD_FMT = chunk(b"fmt ", fmt_payload())
GOOD_DATA = chunk(b"data", wavfiles.pcm16_bytes(SAMPLES))

# (id, bytes, expected message) for each problem the decoder names.
BAD_FILES = [
    ("empty", b"", wav.ERR_NOT_RIFF_WAVE),
    ("text", b"hello, this is not audio at all", wav.ERR_NOT_RIFF_WAVE),
    ("riff-not-wave", riff(GOOD_FMT, GOOD_DATA, form=b"AVI "), wav.ERR_NOT_RIFF_WAVE),
    ("big-endian-rifx", riff(GOOD_FMT, GOOD_DATA, magic=b"RIFX"), wav.ERR_NOT_RIFF_WAVE),
    ("header-only", riff(), wav.ERR_NO_FMT_CHUNK),
    ("no-fmt", riff(LIST_CHUNK, GOOD_DATA), wav.ERR_NO_FMT_CHUNK),
    ("short-fmt", riff(chunk(b"fmt ", fmt_payload()[:12]), GOOD_DATA),
     wav.ERR_SHORT_FMT_CHUNK + " (12 bytes, need 16)"),
    ("no-data", riff(GOOD_FMT, LIST_CHUNK), wav.ERR_NO_DATA_CHUNK),
    ("truncated-data", riff(GOOD_FMT, GOOD_DATA)[:-4],
     wav.ERR_TRUNCATED_DATA + " (declares 10 bytes, 6 present)"),
    ("truncated-huge", riff(GOOD_FMT, b"data" + struct.pack("<I", 32000) + b"\0" * 100),
     wav.ERR_TRUNCATED_DATA + " (declares 32000 bytes, 100 present)"),
    ("adpcm", riff(chunk(b"fmt ", fmt_payload(tag=0x0002, bits=4)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0x0002 (ADPCM)"),
    ("alaw", riff(chunk(b"fmt ", fmt_payload(tag=0x0006, bits=8)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0x0006 (A-law)"),
    ("mulaw", _mulaw_file(), wav.ERR_UNSUPPORTED_FORMAT + " 0x0007 (mu-law)"),
    ("ima-adpcm", riff(chunk(b"fmt ", fmt_payload(tag=0x0011, bits=4)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0x0011 (IMA ADPCM)"),
    ("mp3", riff(chunk(b"fmt ", fmt_payload(tag=0x0055, bits=0)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0x0055 (MPEG Layer 3)"),
    ("unnamed-tag", riff(chunk(b"fmt ", fmt_payload(tag=0xABCD)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0xABCD"),
    ("extensible-alaw", riff(chunk(b"fmt ", fmt_payload(
        wavfiles.WAVE_FORMAT_EXTENSIBLE, bits=8, extensible_tag=0x0006)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_FORMAT + " 0x0006 (A-law)"),
    ("pcm-12-bit", riff(chunk(b"fmt ", fmt_payload(bits=12)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_BITS + " 12 bits for format tag 0x0001"),
    ("float-16-bit", riff(chunk(b"fmt ", fmt_payload(tag=3, bits=16)), GOOD_DATA),
     wav.ERR_UNSUPPORTED_BITS + " 16 bits for format tag 0x0003"),
    ("zero-channels", riff(chunk(b"fmt ", fmt_payload(channels=0)), GOOD_DATA),
     wav.ERR_ZERO_CHANNELS),
    ("zero-rate", riff(chunk(b"fmt ", fmt_payload(rate=0)), GOOD_DATA), wav.ERR_ZERO_RATE),
    ("empty-data", riff(GOOD_FMT, chunk(b"data", b"")), wav.ERR_ZERO_SAMPLES),
    ("partial-frame", riff(chunk(b"fmt ", fmt_payload(channels=2)), chunk(b"data", b"\1\2")),
     wav.ERR_ZERO_SAMPLES),
]
BAD_IDS = [case[0] for case in BAD_FILES]


@pytest.mark.parametrize("name, contents, message", BAD_FILES, ids=BAD_IDS)
def test_try_decode_wav_reports_problem(name, contents, message):
    waveform, rate, error = try_decode_graph(tf.constant(contents))
    assert error.numpy().decode() == message
    assert waveform.shape == (0,) and int(rate) == 0


@pytest.mark.parametrize("name, contents, message", BAD_FILES, ids=BAD_IDS)
def test_decode_wav_raises_with_message(name, contents, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"invalid WAV data: ") as eager:
        wav.decode_wav(tf.constant(contents))
    assert message in eager.value.message
    with pytest.raises(tf.errors.InvalidArgumentError) as graph:
        decode_channels_graph(tf.constant(contents))
    assert message in graph.value.message


@pytest.mark.parametrize("name, contents, message", BAD_FILES, ids=BAD_IDS)
def test_read_wav_raises_naming_path(tmp_path, name, contents, message):
    path = tmp_path / f"{name}.wav"
    path.write_bytes(contents)
    with pytest.raises(wav.WavError) as error:
        wav.read_wav(path)
    assert str(error.value) == f"{path}: {message}"


@pytest.mark.parametrize("subtype, tag", [
    ("ULAW", "0x0007 (mu-law)"), ("ALAW", "0x0006 (A-law)"), ("MS_ADPCM", "0x0002 (ADPCM)"),
    ("IMA_ADPCM", "0x0011 (IMA ADPCM)"), ("GSM610", "0x0031 (GSM 6.10)")])
def test_soundfile_written_compressed_formats_are_named(tmp_path, subtype, tag):
    path = wavfiles.write_wav(tmp_path / "c.wav", _test_signal(800, 1), 8000, subtype)
    _, _, error = try_decode_graph(tf.constant(path.read_bytes()))
    assert error.numpy().decode() == f"{wav.ERR_UNSUPPORTED_FORMAT} {tag}"


def test_read_wav_missing_and_unreadable(tmp_path):
    assert issubclass(wav.WavError, ValueError)
    with pytest.raises(wav.WavError, match=f"^{tmp_path / 'nope.wav'}: no such file$"):
        wav.read_wav(tmp_path / "nope.wav")
    with pytest.raises(wav.WavError, match=f"^{tmp_path}: cannot read file"):
        wav.read_wav(tmp_path)


def test_read_wav_returns_numpy_mono(tmp_path):
    samples = _test_signal(200, 2)
    path = wavfiles.write_wav(tmp_path / "s.wav", samples, 48000, "PCM_16")
    waveform, rate = wav.read_wav(str(path))
    assert isinstance(waveform, np.ndarray) and waveform.dtype == np.float32
    assert rate == 48000 and isinstance(rate, int)
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-7)


def test_try_decode_wav_never_raises_on_damaged_bytes():
    good = pcm16_wav(SAMPLES, before_fmt=(LIST_CHUNK,), between=(ODD_CHUNK,))
    rng = np.random.default_rng(0)
    damaged = [good[:length] for length in range(len(good) + 1)]
    for _ in range(100):
        corrupt = bytearray(good)
        for position in rng.integers(0, len(good), size=rng.integers(1, 4)):
            corrupt[position] = rng.integers(0, 256)
        damaged.append(bytes(corrupt))
    damaged += [rng.bytes(int(n)) for n in rng.integers(0, 200, size=20)]
    damaged.append(b"RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xfffmt \xff\xff\xff\xff")
    for contents in damaged:
        waveform, rate, error = try_decode_graph(tf.constant(contents))
        if error.numpy():
            assert waveform.shape == (0,) and int(rate) == 0
        else:
            assert waveform.shape[0] > 0 and int(rate) > 0


def test_dataset_map_skips_corrupt_file(tmp_path):
    paths = []
    for index, rate in enumerate([8000, 16000, 44100]):
        paths.append(str(wavfiles.write_wav(
            tmp_path / f"{index}.wav", _test_signal(100 * (index + 1), 2), rate, SUBTYPES[index])))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(riff(GOOD_FMT, GOOD_DATA)[:-4])
    paths.insert(1, str(corrupt))

    def load(path):
        waveform, rate, error = wav.try_decode_wav(tf.io.read_file(path))
        return path, waveform, rate, error

    dataset = tf.data.Dataset.from_tensor_slices(paths).map(load)
    results = {p.decode(): (w, r, e) for p, w, r, e in dataset.as_numpy_iterator()}
    assert results[str(corrupt)][2].decode().startswith(wav.ERR_TRUNCATED_DATA)
    good = dataset.filter(lambda p, w, r, e: tf.equal(e, ""))
    assert [(len(w), r) for _, w, r, _ in good.as_numpy_iterator()] == [
        (100, 8000), (200, 16000), (300, 44100)]


def test_decode_in_dataset_raises_on_corrupt_file():
    dataset = tf.data.Dataset.from_tensor_slices([b"not a wav"]).map(wav.decode_wav)
    with pytest.raises(tf.errors.InvalidArgumentError, match=wav.ERR_NOT_RIFF_WAVE):
        list(dataset)


def test_saved_model_signature(tmp_path):
    module = tf.Module()
    module.decode = tf.function(
        lambda contents: wav.try_decode_wav(contents),
        input_signature=[tf.TensorSpec([], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "model"))
    reloaded = tf.saved_model.load(str(tmp_path / "model"))
    contents = pcm16_wav(SAMPLES, rate=11025, channels=1, before_fmt=(LIST_CHUNK,))
    waveform, rate, error = reloaded.decode(tf.constant(contents))
    np.testing.assert_array_equal(waveform.numpy(), SAMPLES)
    assert int(rate) == 11025 and error.numpy() == b""
    _, rate, error = reloaded.decode(tf.constant(b"garbage"))
    assert int(rate) == 0 and error.numpy().decode() == wav.ERR_NOT_RIFF_WAVE


def test_tf_audio_decode_wav_rejects_24_bit(tmp_path):
    """The reason this module exists: TF's own decoder reads only 16-bit PCM."""
    path = wavfiles.write_wav(tmp_path / "a.wav", _test_signal(100, 1), 16000, "PCM_24")
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.audio.decode_wav(path.read_bytes())
    channels, _ = decode_channels_graph(tf.constant(path.read_bytes()))
    assert channels.shape == (100, 1)
