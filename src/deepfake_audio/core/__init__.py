"""What every room shares: one-line user errors, atomic writes, quiet TensorFlow, the import graph.

Nothing here imports MLflow, keras-tuner or DVC (a test checks it with `ast`).
"""
