"""deepfake-audio: a DVC + MLflow pipeline that detects spoofed speech."""

__version__ = "0.1.0"
