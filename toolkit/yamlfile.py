"""Read the shared YAML config file: a mapping of sections, or one printable line saying why not.

Every component reads the same file and validates only its own section, so the reading itself
(missing file, broken YAML, a list where sections belong) is shared here and fails the same way
for every command. Callers turn :class:`YamlFileError` into their own config error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(Exception):
    """The file cannot be read or is not a YAML mapping; the message is one line naming the file."""


def read_mapping(path: Path | str | None) -> dict[str, Any]:
    """The top-level mapping of the YAML file at ``path``; ``{}`` without a path or for an empty file.

    ``yaml.safe_load`` only: a config file never constructs Python objects.
    """
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # PyYAML's own text spans lines
        raise YamlFileError(f"{path}:{where} not valid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: the top level must be a mapping of sections")
    return data
