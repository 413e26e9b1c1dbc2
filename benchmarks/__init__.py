"""Benchmark suite of the deepfake-audio pipeline: `python -m benchmarks` (see README.md).

Each section measures one claim of the project against the baseline it replaced (librosa,
the notebook's ImageDataGenerator, the notebook's CNN) or times the pipeline itself, and
records the figure, its unit, its repeats and exactly what was compared in
`reports/benchmarks.json`.
"""
