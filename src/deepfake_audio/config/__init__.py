"""Configuration: params.yaml typed and validated, before any work is done.

Pure: no MLflow, keras-tuner, DVC, nor TensorFlow (`deepfake-audio --help` and params
validation stay instant).
"""
