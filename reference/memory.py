"""Memory guard for exact computations on joint spaces.

Every routine that materialises an array over the joint state (or state-action)
space predicts its peak memory first and calls :func:`check_memory`, which raises
:class:`~reference.errors.MemoryLimitError` before anything large is allocated.

The limit is, in order of precedence: the ``memory_limit`` argument of the call,
the environment variable ``MARL_ORACLE_MEMORY_LIMIT`` (bytes, e.g. ``2e9``), or
:data:`DEFAULT_MEMORY_LIMIT`.
"""

from __future__ import annotations

import os

from reference.errors import MemoryLimitError, ModelError

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "check_memory",
    "format_bytes",
    "memory_limit",
    "predicted_bytes",
]

DEFAULT_MEMORY_LIMIT = 4 * 1024**3
"""Default limit on the predicted peak memory of one exact computation: 4 GiB."""

_FLOAT_BYTES = 8


def memory_limit(override: float | None = None) -> int:
    """The limit in bytes that applies to a call (argument, environment, default)."""
    if override is not None:
        value = float(override)
        source = "memory_limit"
    else:
        env = os.environ.get("MARL_ORACLE_MEMORY_LIMIT")
        if env is None:
            return DEFAULT_MEMORY_LIMIT
        try:
            value = float(env)
        except ValueError:
            raise ModelError(
                f"MARL_ORACLE_MEMORY_LIMIT = {env!r} is not a number of bytes"
            ) from None
        source = "MARL_ORACLE_MEMORY_LIMIT"
    if not value > 0:
        raise ModelError(f"{source} = {value!r}, expected a positive number of bytes")
    return int(value)


def predicted_bytes(*float_counts: int) -> int:
    """Bytes taken by float64 arrays with the given numbers of entries."""
    return _FLOAT_BYTES * sum(int(c) for c in float_counts)


_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units with four significant digits, e.g. ``"7.5 GiB"``;
    past yobibytes the mantissa grows in scientific notation (``"1.6e+04 YiB"``), so a huge
    prediction never prints as a long run of digits."""
    value = float(count)
    unit = 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g} {_UNITS[unit]}"


def check_memory(needed: int, what: str, override: float | None = None) -> None:
    """Raise :class:`MemoryLimitError` if ``needed`` bytes exceed the limit."""
    limit = memory_limit(override)
    if needed > limit:
        raise MemoryLimitError(
            f"{what} needs about {format_bytes(needed)}, above the memory limit of "
            f"{format_bytes(limit)} (raise it with memory_limit= or "
            "MARL_ORACLE_MEMORY_LIMIT, or use a smaller instance)"
        )
