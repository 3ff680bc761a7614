"""marl-oracle's mathematics: exact tabular solvers and the sampled algorithms.

* :mod:`reference.tabular` -- one MDP on an explicit joint space (SPEC section 1).
* :mod:`reference.networked` -- networked MARL with general utilities (SPEC section 2).
* :mod:`reference.instances` -- named instances with their sources (SPEC section 7).
* :mod:`reference.envs` -- the named instances as PettingZoo parallel environments (the
  ``envs`` extra, imported only when an environment is built).

``reference`` never imports ``verify``.
"""

from reference.errors import (
    GraphError,
    MemoryLimitError,
    ModelError,
    OutputError,
    PolicyError,
    SolverError,
    UtilityDomainError,
)
from reference.memory import DEFAULT_MEMORY_LIMIT, check_memory, memory_limit
from reference.tabular import (
    CertifiedSolution,
    Occupancy,
    PolicyValues,
    TabularMDP,
    evaluate,
    evaluate_iterative,
    kernel_under,
    occupancy,
    occupancy_iterative,
    performance_difference,
    policy_gradient,
    softmax,
    softmax_score,
    validate_policy,
)

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "CertifiedSolution",
    "GraphError",
    "MemoryLimitError",
    "ModelError",
    "Occupancy",
    "OutputError",
    "PolicyError",
    "PolicyValues",
    "SolverError",
    "TabularMDP",
    "UtilityDomainError",
    "check_memory",
    "evaluate",
    "evaluate_iterative",
    "kernel_under",
    "memory_limit",
    "occupancy",
    "occupancy_iterative",
    "performance_difference",
    "policy_gradient",
    "softmax",
    "softmax_score",
    "validate_policy",
]
