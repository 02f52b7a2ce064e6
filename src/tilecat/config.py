"""Configuration: load a YAML file, fill defaults, validate against the JSON Schema.

The schema lives in ``tilecat/data/config.schema.yaml`` (``workflow/schemas`` links
to it, so Snakemake's ``validate`` and the CLI check the same thing).
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["load_config", "validate_config", "config_hash", "schema", "EXECUTION_SECTIONS",
           "check_schema", "read_yaml"]


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The configuration JSON Schema as a dict."""
    text = resources.files("tilecat").joinpath("data/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _fill_defaults(validator_cls: Any) -> Any:
    """Extend a jsonschema validator class so that ``default`` values are filled in."""
    from jsonschema import validators

    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, sch: dict) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, sch)

    return validators.extend(validator_cls, {"properties": set_defaults})


def check_schema(instance: Any, sch: dict[str, Any], source: str, *, passes: int = 1) -> None:
    """Validate ``instance`` against the JSON Schema ``sch``, filling ``default`` values
    in place.

    Parameters
    ----------
    instance : Any
        The document (as read from YAML); modified in place.
    sch : dict
        JSON Schema (draft 2020-12).
    source : str
        Name used in error messages (the file).
    passes : int
        Validation passes (a second one fills the defaults inside objects the first
        one created from defaults).

    Raises
    ------
    ConfigError
        ``"<source>: key '<dotted.path>': <reason>"`` for the first error by key path
        (``(top level)`` for the root; ``unknown key: ...`` for additional properties).
    """
    from jsonschema import Draft202012Validator

    cls = _fill_defaults(Draft202012Validator)
    for _ in range(passes):
        errors = sorted(cls(sch).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            key = ".".join(str(p) for p in err.path) or "(top level)"
            msg = err.message
            if err.validator == "additionalProperties":
                msg = f"unknown key: {msg}"
            raise ConfigError(f"{source}: key '{key}': {msg}")


def read_yaml(path: Path, what: str) -> Any:
    """Parse the YAML file ``path``.

    Parameters
    ----------
    path : Path
        YAML file.
    what : str
        What the file is, for error messages (e.g. ``"config file"``).

    Returns
    -------
    Any
        The parsed document (None for an empty file).

    Raises
    ------
    ConfigError
        ``"<what> <path> does not exist"`` or ``"<what> <path> is not valid YAML: ..."``.
    """
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises
    ------
    ConfigError
        Naming the offending key path and the reason.
    """
    # two passes: defaults of nested objects created by the first pass get filled too
    check_schema(config, schema(), source, passes=2)
    survey = config["survey"]
    missing = [b for b in survey["bands"] if b not in survey["zeropoints"]]
    if missing:
        raise ConfigError(f"{source}: key 'survey.zeropoints': no zeropoint for band(s) {missing}")
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read, default-fill and validate a configuration file.

    Parameters
    ----------
    path : str or Path
        YAML file.

    Returns
    -------
    dict
        The validated configuration.
    """
    path = Path(path)
    config = read_yaml(path, "config file")
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return validate_config(config, source=str(path))


#: Top-level sections that choose how a survey is run, not what it computes (Dask
#: scheduler, Snakemake planning mode, release packaging): left out of
#: :func:`config_hash`, so the same survey run with 1 or 2 Dask workers, per tile or
#: batched, gives byte-identical catalogs.
EXECUTION_SECTIONS: tuple[str, ...] = ("dask", "workflow", "release")


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form of ``config`` (key order independent),
    without the execution-only sections :data:`EXECUTION_SECTIONS`."""
    science = {k: v for k, v in config.items() if k not in EXECUTION_SECTIONS}
    blob = json.dumps(science, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
