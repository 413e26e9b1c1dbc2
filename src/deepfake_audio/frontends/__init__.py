"""Pretrained front ends: networks trained elsewhere on a lot of speech, frozen, read by our code.

`ctranslate2_weights` reads a CTranslate2 `model.bin` (the format Whisper's weights install
in, offline, from the `whisper` extra) into numpy arrays and finds the pinned, hash-checked
copy; `whisper` is Whisper's encoder (log-mel, conv stem, the first blocks) as frozen Keras 3
layers. Only core and config are imported from the package, so models, serving and the stages
can all use them (tests/test_architecture.py).
"""
