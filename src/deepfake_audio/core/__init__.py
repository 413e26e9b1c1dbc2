"""The pure core: params, audio, features, images, metrics, reporting, atomic io, errors.

Nothing here imports MLflow, keras-tuner or DVC (a test checks it with `ast`), so the
core is what serving ships and what any stage can use without pulling in tracking.
"""
