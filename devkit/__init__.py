"""Development tools shared by the test suite and the benchmarks; not part of the installed package.

Benchmarks are tools for users and must not import the test suite, yet both need the same
stand-ins (a fake Prometheus). They live here, importable from a checkout: pytest puts the
repository root on ``sys.path`` (``tests`` is a package), and each benchmark inserts it. It is
left out of ``[tool.setuptools.packages.find]`` on purpose, so no image or wheel ships a fake
Prometheus. Nothing here may import ``tests``.
"""
