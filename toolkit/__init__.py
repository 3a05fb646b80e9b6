"""What every command of this project shares: flags, config files, logging, HTTP serving, version.

Nothing here knows about forecasting, hosts or models, and nothing here imports :mod:`exporter`,
:mod:`forecaster`, :mod:`trainer` or :mod:`demo`: the simulator must stay free of the forecasting
stack, so whatever it shares with the forecaster has to live below both. Importing the package (or
any module of it but :mod:`toolkit.webconfig`) is cheap: standard library and PyYAML only, so a CLI
can use it before deciding whether to pay for torch. :mod:`toolkit.webconfig` adds pydantic and
bcrypt, and is imported only when a ``--web.config.file`` is given.

* :mod:`toolkit.cli` - the argparse parser whose usage errors are one line and exit status 2.
* :mod:`toolkit.yamlfile` - read a YAML mapping with one-line errors.
* :mod:`toolkit.logs` - the one logging setup (logfmt or JSON on stderr).
* :mod:`toolkit.http` - listen addresses (IPv4 and IPv6) and a threaded WSGI server.
* :mod:`toolkit.webconfig` - ``--web.config.file``: TLS and basic auth in exporter-toolkit's format.
* :mod:`toolkit.version` - the installed distribution's version.
"""
