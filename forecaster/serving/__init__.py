"""The online forecasting service: one cycle, the model store, the snapshot, /metrics and the JSON API.

It builds on :mod:`forecaster.contract` and never on :mod:`trainer`.
"""
