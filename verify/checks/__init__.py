"""Conformance checks for users' implementations (the way ``gymnasium``'s ``check_env`` or
``torch.autograd.gradcheck`` work): one call per quantity, on generated instances, returning a
typed :class:`CheckReport` that says whether the callable is right and, if not, where and by
how much.  See ``verify/checks/_core.py`` for the shared machinery and the README section
"Checking your implementation" for worked examples."""

from verify.checks._core import (
    MAX_FALSE_ALARM,
    PRECISIONS,
    Alternative,
    Case,
    CaseResult,
    CheckArgumentError,
    CheckFailed,
    CheckReport,
    Compared,
    Declaration,
    KnownBug,
    Mutant,
    UserIO,
    case_generator,
    case_rng,
    case_size,
    run_check,
)
from verify.checks.advantage_norm import check_advantage_normalisation
from verify.checks.cooperative import (
    check_agent_ratios,
    check_joint_ratio,
    check_localized_q,
    check_mappo_step,
)
from verify.checks.gae import (
    check_gae,
    gae_finite_sum,
    gae_recursion,
    gae_rounding,
    gae_rounding_entries,
    gae_zero_advantage,
)
from verify.checks.layout import check_batching
from verify.checks.multi_discrete import check_multi_discrete
from verify.checks.networked import (
    check_local_occupancy_estimator,
    check_shadow_reward,
    check_truncated_critic,
)
from verify.checks.normalisation import check_popart, check_value_normalisation
from verify.checks.ppo_loss import (
    check_ppo_loss,
    check_ppo_loss_loglinear,
    check_td_loss,
    check_value_loss,
)
from verify.checks.returns import (
    check_nstep_returns,
    check_td_lambda,
    check_vtrace,
)
from verify.checks.tabular import (
    check_advantage,
    check_occupancy,
    check_occupancy_estimator,
    check_policy_gradient,
    check_policy_gradient_estimator,
    finite_horizon_occupancy,
)

__all__ = [
    "MAX_FALSE_ALARM",
    "PRECISIONS",
    "Alternative",
    "Case",
    "CaseResult",
    "CheckArgumentError",
    "CheckFailed",
    "CheckReport",
    "Compared",
    "Declaration",
    "KnownBug",
    "Mutant",
    "UserIO",
    "case_generator",
    "case_rng",
    "case_size",
    "check_advantage",
    "check_advantage_normalisation",
    "check_agent_ratios",
    "check_batching",
    "check_gae",
    "check_joint_ratio",
    "check_local_occupancy_estimator",
    "check_localized_q",
    "check_mappo_step",
    "check_multi_discrete",
    "check_nstep_returns",
    "check_occupancy",
    "check_occupancy_estimator",
    "check_policy_gradient",
    "check_policy_gradient_estimator",
    "check_popart",
    "check_ppo_loss",
    "check_ppo_loss_loglinear",
    "check_shadow_reward",
    "check_td_lambda",
    "check_td_loss",
    "check_truncated_critic",
    "check_value_loss",
    "check_value_normalisation",
    "check_vtrace",
    "finite_horizon_occupancy",
    "gae_finite_sum",
    "gae_recursion",
    "gae_rounding",
    "gae_rounding_entries",
    "gae_zero_advantage",
    "run_check",
]
