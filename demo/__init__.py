"""tft-demo: the whole pipeline on one machine, with a live view of its predictions.

``tft-demo`` (``demo.cli``) backfills a simulated fleet into a private Prometheus, starts the
simulator, Prometheus and the forecaster as child processes (``demo.pipeline``), shows each
cycle's predicted breaches (``demo.view``) and judges them against the simulator's scripted
incidents (``demo.report``). ``tft-demo plot`` renders one host's forecast against what
happened (``demo.plot``). Importing the package does no work.
"""

__all__: list[str] = []
