"""JSON from clients with a nesting limit, so a hostile body cannot recurse into an error.

``json.loads('[' * 2000)`` raises :class:`RecursionError` (not :class:`ValueError`) from
CPython's decoder, which request handlers did not expect: a 500 with a traceback per
request. :func:`loads` refuses anything nested deeper than :data:`MAX_DEPTH` with
:class:`JsonTooDeep`, a :class:`ValueError`, before decoding. Every API body, WebSocket and
data-channel message goes through it. Pure standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JsonTooDeep", "loads"]

#: Deepest nesting accepted (arrays and objects). climbd's messages nest at most 3 deep.
MAX_DEPTH = 32
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonTooDeep(ValueError):
    """The JSON text nests arrays/objects deeper than allowed."""


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`json.loads` with a nesting limit.

    Raises:
        JsonTooDeep: nested deeper than ``max_depth`` (a ValueError).
        ValueError: not JSON, or (bytes) not UTF-8.
    """
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    if text.count("[") + text.count("{") > max_depth:
        _check_depth(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # belt and braces: never let it escape as a 500
        raise JsonTooDeep("JSON nested too deeply") from None
