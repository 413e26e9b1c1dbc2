"""Scoring: EER, DCF and Cllr (metrics), calibration fitted on validation, a detector's report.

Pure numpy and scipy, shared by the LFCC-GMM baseline, the CNN's evaluation and serving.
"""
