"""The model contract that training and serving share.

Configuration and signals, the one input pipeline (Prometheus or Parquet -> panel -> windows), the
network and its outputs, calibration, the on-disk artifact format and registry, the baselines, and
the only Prometheus HTTP client. Nothing here imports :mod:`forecaster.serving` or :mod:`trainer`.
"""
