"""Networked MARL with general utilities (Ying et al. 2023; SPEC sections 2-4).

One module per mathematical object: :mod:`.graph` (interaction graphs and k-hop
neighbourhoods), :mod:`.model` (the networked MDP and its joint space), :mod:`.policy`
(localized softmax policies), :mod:`.transition` (the joint kernel under a policy,
behind one backend interface), :mod:`.utilities` (general utilities) and
:mod:`.exact` (occupancies, shadow rewards, shadow Q and the three gradient routes),
:mod:`.truncation` (kappa-hop decay and truncated gradients), :mod:`.sampling` (the
vectorised sampler) and :mod:`.algorithm` (Algorithm 1 and the exact expectations of its
estimators).
"""

from reference.networked.algorithm import (
    Algorithm1Config,
    Algorithm1History,
    CriticTable,
    GradientEstimate,
    TDMeanField,
    finite_horizon_occupancy,
    gradient_estimate,
    gradient_estimate_expectation,
    mc_critic,
    mc_critic_expectation,
    occupancy_estimate,
    run_algorithm1,
    shadow_reward_estimate,
    td_critic,
    td_critic_limit,
    td_critic_mean_field,
)
from reference.networked.exact import (
    NetworkedSolution,
    gradient_chain_rule,
    gradient_joint_q,
    gradient_norm,
    local_occupancies,
    local_occupancy_jacobian,
    objective,
    score_contraction,
    shadow_q,
    solve,
    team_q,
)
from reference.networked.graph import Graph
from reference.networked.model import JointSpace, NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.sampling import (
    Sampler,
    Trajectories,
    geometric_horizons,
    rollout,
    sample_initial,
)
from reference.networked.transition import (
    DenseOperator,
    LinearSolve,
    TransitionOperator,
    contract_next_state,
    expand_next_state,
    transition_operator,
)
from reference.networked.truncation import (
    DecayProfile,
    TruncatedQ,
    cancellation_residual,
    decay_bound,
    decay_profile,
    decay_spread,
    first_escape_time,
    truncated_gradient,
    truncated_q,
)
from reference.networked.utilities import (
    ConstraintPenaltyUtility,
    EntropyUtility,
    KLImitationUtility,
    LinearUtility,
    QuadraticImitationUtility,
    Utility,
    UtilityConstants,
)

__all__ = [
    "Algorithm1Config",
    "Algorithm1History",
    "ConstraintPenaltyUtility",
    "CriticTable",
    "DecayProfile",
    "DenseOperator",
    "EntropyUtility",
    "GradientEstimate",
    "Graph",
    "JointSpace",
    "KLImitationUtility",
    "LinearSolve",
    "LinearUtility",
    "LocalizedSoftmaxPolicy",
    "NetworkedMDP",
    "NetworkedSolution",
    "QuadraticImitationUtility",
    "Sampler",
    "TDMeanField",
    "Trajectories",
    "TransitionOperator",
    "TruncatedQ",
    "Utility",
    "UtilityConstants",
    "cancellation_residual",
    "contract_next_state",
    "decay_bound",
    "decay_profile",
    "decay_spread",
    "expand_next_state",
    "finite_horizon_occupancy",
    "first_escape_time",
    "geometric_horizons",
    "gradient_chain_rule",
    "gradient_estimate",
    "gradient_estimate_expectation",
    "gradient_joint_q",
    "gradient_norm",
    "local_occupancies",
    "local_occupancy_jacobian",
    "mc_critic",
    "mc_critic_expectation",
    "objective",
    "occupancy_estimate",
    "rollout",
    "run_algorithm1",
    "sample_initial",
    "score_contraction",
    "shadow_q",
    "shadow_reward_estimate",
    "solve",
    "td_critic",
    "td_critic_limit",
    "td_critic_mean_field",
    "team_q",
    "transition_operator",
    "truncated_gradient",
    "truncated_q",
]
