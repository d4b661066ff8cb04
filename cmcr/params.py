"""Reading ``params.yaml`` and ``-S key=value`` the same way DVC reads them.

DVC reads ``params.yaml`` (and parses ``-S key=value``) with ruamel.yaml, a YAML 1.2 parser; PyYAML is
YAML 1.1, where ``5e-4`` is a *string* and ``yes``/``on`` are booleans. Reading with anything else makes
the pipeline and DVC disagree about what a value is, so every reader in this project goes through
:func:`load_params` / :func:`parse_value`.

Checking what was read is :mod:`cmcr.validation`'s job.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cmcr.config import ConfigError, deep_merge

def _yaml():
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True)  # YAML 1.2, as DVC's own reader (dvc.utils.serialize.parse_yaml)


def parse_value(raw: str) -> Any:
    """A ``-S key=value`` value as YAML 1.2 reads it: ``5e-4`` → 0.0005, ``[clip]`` → ['clip'], ``maybe`` → 'maybe'."""
    from ruamel.yaml.error import YAMLError

    try:
        return _yaml().load(io.StringIO(raw))
    except YAMLError as exc:
        raise ConfigError(f"value {raw!r} is not valid YAML: {str(exc).splitlines()[0]}") from None


def load_params(path: Path | str) -> dict[str, Any]:
    """``params.yaml`` as plain dicts/lists/scalars (YAML 1.2). ConfigError naming the file if it is missing,
    not YAML, or not a mapping."""
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = _yaml().load(path.read_text())
    except YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["noise.var=0.002", "loss.intra_spaces=[clip]"]`` → nested dict, values parsed as :func:`parse_value`."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like group.key=value")
        node: dict[str, Any] = {}
        cursor = node
        parts = key.split(".")
        for part in parts[:-1]:
            cursor[part] = {}
            cursor = cursor[part]
        cursor[parts[-1]] = parse_value(raw)
        result = deep_merge(result, node)
    return result
