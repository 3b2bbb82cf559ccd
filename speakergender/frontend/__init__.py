"""The front end, shared by the tf.data pipeline and the exported SavedModel.

    wav.py        WAV bytes -> float32 waveforms, on graph, never raising on bad bytes
    resample.py   band-limited resampling to the model's rate
    decoding.py   a batch of files -> conditioned recordings (decode, resample, DC removal)
    windows.py    fixed-length windows: training crops, served frames, their levels
    features.py   waveform -> log-mel / MFCC, and the Keras front-end layer

Nothing here imports training, model or export code.
"""
