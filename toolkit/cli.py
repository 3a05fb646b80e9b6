"""The command-line conventions every ``tft-*`` command follows.

A bad command line must end in one readable line on stderr and exit status 2, like a bad config
file, so that scripts and humans see the same kind of failure whatever went wrong. argparse's own
``error()`` prints the whole usage block and exits from deep inside ``parse_args``; :class:`Parser`
raises :class:`UsageError` instead, and each ``main()`` prints it in its own words and returns
:data:`EXIT_USAGE`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from toolkit.logs import FORMATS, LEVELS
from toolkit.version import package_version

#: The exit status of a bad command line or configuration, the same for every command.
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line usage; the message is one line meant for the user (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of printing usage and exiting.

    Subparsers made with ``add_subparsers`` inherit the class, so a subcommand's errors behave
    the same. ``--help`` and ``--version`` still print and exit 0 as usual. Abbreviated flags are
    refused: argparse would take ``--web.listen-addres`` for ``--web.listen-address``, and a
    prefix that silently means something today may mean something else once a flag is added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse messages are one line today; joining keeps the promise if one ever is not.
        raise UsageError(" ".join(message.split()))


def add_config_flag(parser: argparse.ArgumentParser, help: str = "YAML configuration file") -> None:
    """``--config.file FILE`` (``args.config_file``, a Path or None): where every command reads its config."""
    parser.add_argument("--config.file", dest="config_file", type=Path, metavar="FILE", help=help)


def add_log_flags(parser: argparse.ArgumentParser, default_level: str = "info") -> None:
    """``--log.level`` and ``--log.format`` (``args.log_level``, ``args.log_format``), for :mod:`toolkit.logs`.

    The choices are checked by argparse, so a bad level is a usage error before anything runs.
    """
    parser.add_argument("--log.level", dest="log_level", default=default_level, choices=LEVELS, metavar="LEVEL",
                        help=f"{', '.join(LEVELS)} (default: {default_level})")
    parser.add_argument("--log.format", dest="log_format", default=FORMATS[0], choices=FORMATS, metavar="FORMAT",
                        help=f"log lines on stderr as {' or '.join(FORMATS)} (default: {FORMATS[0]})")


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: prints ``PROG, version X`` (the installed distribution's) and exits 0, as Prometheus does."""
    parser.add_argument("--version", action="version", version=f"{parser.prog}, version {package_version()}")


def add_global_flags_to(subparser: argparse.ArgumentParser, *adders: Callable[[argparse.ArgumentParser], None]) -> None:
    """Accept the global flags after the subcommand too (``tft-trainer train --config.file F``).

    The subcommand's copies default to ``SUPPRESS``, so a flag given before the subcommand is not
    overwritten by the subparser's default, and one given after it wins.
    """
    scratch = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(scratch)
    for action in scratch._actions:
        subparser.add_argument(*action.option_strings, dest=action.dest, default=argparse.SUPPRESS,
                               type=action.type, choices=action.choices, metavar=action.metavar, help=action.help)
