"""The one error family of marl-oracle.

Every input check raises a subclass of :class:`ModelError`, itself a
:class:`ValueError`, with a message that names the offending entry and its value,
for example ``P_2[s_N=(0, 1), a=1] sums to 0.97, expected 1``.  Input checks never
use ``assert`` (``python -O`` strips it).
"""

from __future__ import annotations

__all__ = [
    "DatasetError",
    "GraphError",
    "MemoryLimitError",
    "ModelError",
    "NonConcaveError",
    "OutputError",
    "PolicyError",
    "SolverError",
    "UtilityDomainError",
]


class ModelError(ValueError):
    """Base class: an instance, argument or array that violates its contract."""


class GraphError(ModelError):
    """An invalid interaction graph (self-loop, out-of-range node, bad radius, ...)."""


class PolicyError(ModelError):
    """A policy or policy parameter whose shape or values do not fit its model."""


class UtilityDomainError(ModelError):
    """A utility evaluated outside its domain (wrong shape, non-finite, below a log floor)."""


class MemoryLimitError(ModelError):
    """An exact computation whose predicted memory exceeds the configured limit.

    Raised *before* any large allocation, so an oversized instance fails with a
    message instead of an out-of-memory crash.
    """


class SolverError(ModelError):
    """An iterative solver that could not certify the requested accuracy."""


class DatasetError(ModelError):
    """An offline dataset, or a dataset file, that violates its contract (wrong schema, a
    missing or unexpected field, an entry out of range, or a game it was not drawn for)."""


class NonConcaveError(ModelError):
    """A global optimum requested for a utility that is not declared concave: the program
    over the occupancy polytope is then not a concave program, and a local method would
    answer with a local optimum."""
class OutputError(ModelError):
    """An output file that cannot be written where it was asked for (a missing or
    unwritable directory, a path that is a directory, a format that cannot be written); the
    message names the argument and the path, and is raised before any work is done."""
