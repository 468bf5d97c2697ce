"""`setting(default, help)`: a dataclass field that carries its one line of help.

Every configurable value of squadqa is a field of a domain dataclass (`FeatureConfig`,
`SpanConfig`, `QAConfig`, the sections of `squadqa.config.RunConfig`): its default lives there
and only there, and `squadqa train --help-config` reads the help from the field's metadata, as
Hugging Face's argument dataclasses do.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str) -> Any:
    """A dataclass field with a default and one line of help."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def is_int(value: Any) -> bool:
    """An int that is not a bool: TOML and JSON `true` arrive as Python's int subclass."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (see `is_int`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
