"""Evaluation and calibration: benchmark data readers and split rules (``data``), routing curves and
APGR (``curves``), evaluation, calibration and cross-validation summaries (``report``).
"""
