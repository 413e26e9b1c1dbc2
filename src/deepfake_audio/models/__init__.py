"""The architectures, one a file (`<name>.py`: its layers, INPUTS and SEARCH_SPACE), and
`network`, which builds, compiles and loads them.

Nothing is imported here: `config.architectures` reads the files of this folder without
importing Keras, and importing `deepfake_audio.models.<x>` runs this file first.
"""
