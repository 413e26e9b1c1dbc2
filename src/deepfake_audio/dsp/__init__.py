"""Signal processing: audio and pictures in, features out (one transform for training and serving).

Decoding, resampling and loudness (audio), log-mel / LFCC / waveform features, training-time
augmentation (augment, rawboost) and the notebook's spectrogram pictures (images). Pure
numpy, scipy and soundfile: no MLflow, keras-tuner, DVC or TensorFlow.
"""
