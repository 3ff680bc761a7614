"""Networked MARL with general utilities (Ying et al. 2023; SPEC sections 2-4).

One module per mathematical object: :mod:`.graph` (interaction graphs and k-hop
neighbourhoods), :mod:`.model` (the networked MDP and its joint space), :mod:`.policy`
(localized softmax policies), :mod:`.transition` (the joint kernel under a policy,
behind one backend interface), :mod:`.utilities` (general utilities) and
:mod:`.exact` (occupancies, shadow rewards, shadow Q and the three gradient routes).
"""

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
from reference.networked.transition import (
    DenseOperator,
    LinearSolve,
    TransitionOperator,
    contract_next_state,
    expand_next_state,
    transition_operator,
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
    "ConstraintPenaltyUtility",
    "DenseOperator",
    "EntropyUtility",
    "Graph",
    "JointSpace",
    "KLImitationUtility",
    "LinearSolve",
    "LinearUtility",
    "LocalizedSoftmaxPolicy",
    "NetworkedMDP",
    "NetworkedSolution",
    "QuadraticImitationUtility",
    "TransitionOperator",
    "Utility",
    "UtilityConstants",
    "contract_next_state",
    "expand_next_state",
    "gradient_chain_rule",
    "gradient_joint_q",
    "gradient_norm",
    "local_occupancies",
    "local_occupancy_jacobian",
    "objective",
    "score_contraction",
    "shadow_q",
    "solve",
    "team_q",
    "transition_operator",
]
