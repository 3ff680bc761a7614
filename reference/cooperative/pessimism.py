"""Pessimistic policy evaluation and pessimistic off-policy MA-PPO (SPEC section 6; Zhao et
al. 2023, section 5).  Derivations: ``proofs_notes/pessimism.md``.

For a dataset ``{(s_i, a_i, r_i, s'_i)}`` and critic features ``phi(s, a)`` of the joint
action, with ``Lambda = sum_i phi_i phi_i^T + lambda_reg I`` and ``H = 1/(1 - gamma)``, the
evaluation map of a joint policy ``pi`` is

    (T_pi Q)(s, a) = clip( phi(s,a).w(V) - Gamma(s,a), 0, H ),  V(s) = sum_a pi(a|s) Q(s,a),
    w(V) = Lambda^{-1} sum_i phi_i (r_i + gamma V(s'_i)),  Gamma = beta_G ||phi||_{Lambda^{-1}}.

It is affine inside the clip: ``phi.w(V) = c + gamma C V`` with the offset
``c = Phi Lambda^{-1} Phi_D^T r`` (one entry per joint cell ``(s, a)``) and the
``(nS |A|, nS)`` next-state matrix ``C = Phi Lambda^{-1} Phi_D^T E`` (``E`` selects ``s'_i``).
A :class:`PessimisticCritic` stores ``c``, ``C`` and ``Gamma`` once per dataset; every
evaluation is then matrix-free in the data.  Its sup-norm modulus is
``q = gamma ||C||_inf`` (``pessimism.md#contraction``): ``q <= gamma`` for indicator and
aggregation features (``C >= 0``, rows summing to ``n/(n + lambda) < 1``) but not for general
features, where the map can expand and no fixed point is certified.

Two routes to the fixed point ``Qhat = T_pi Qhat``: :func:`evaluate_pessimistic` iterates with
the a-posteriori certificate of a ``q``-contraction, for any features with ``q < 1``;
:func:`solve_pessimistic` solves it exactly by policy iteration on the active set of the
lower clip, for monotone critics (``C >= 0`` and an upper clip that cannot bind).  Two routes
to the critic: :func:`tabular_critic` from the counts ``n(s,a)``, ``n(s,a,s')`` and reward sums
(``Lambda = diag(n + lambda_reg)``), and :func:`feature_critic` from the per-sample feature
rows; with :meth:`CriticFeatures.one_hot` they build the same map.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse

from reference._arrays import EPS_F64, FloatArray, as_float_array, frozen, read_only
from reference.cooperative.exact import evaluate_game, localized_marginals
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.mappo import (
    Schedule,
    beta_at,
    mappo_bound,
    mirror_descent_step,
)
from reference.cooperative.offline import OfflineDataset
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError, PolicyError, SolverError
from reference.tabular import policy_iteration

__all__ = [
    "CriticFeatures",
    "PessimismBound",
    "PessimisticCritic",
    "PessimisticHistory",
    "PessimisticValues",
    "ValidityEvent",
    "evaluate_pessimistic",
    "feature_critic",
    "optimal_comparator",
    "pessimism_bound",
    "run_pessimistic_mappo",
    "solve_pessimistic",
    "tabular_critic",
    "tabular_validity_coefficient",
    "validity_event",
]


@dataclass(frozen=True, eq=False)
class CriticFeatures:
    """Joint-action features ``phi(s, a) in R^d`` of the pessimistic critic, ``||phi|| <= 1``.

    Attributes:
        phi: ``(nS, |A^0|, ..., |A^{N-1}|, d)`` feature vectors.
        name: ``"one-hot"``, ``"aggregation"``, ``"random"`` or a user label.
    """

    phi: FloatArray
    name: str = "features"

    def __post_init__(self) -> None:
        phi = as_float_array(self.phi, "phi")
        if phi.ndim < 3:
            raise ModelError(
                f"phi has shape {phi.shape}, expected (nS, |A^0|, ..., |A^(N-1)|, d)"
            )
        norms = np.sqrt(np.sum(phi * phi, axis=-1))
        # a unit vector built in float64 has norm 1 + O(d eps)
        over = norms > 1.0 + 4 * phi.shape[-1] * EPS_F64
        if over.any():
            idx = tuple(int(i) for i in np.argwhere(over)[0])
            raise ModelError(
                f"||phi[s={idx[0]}, a={idx[1:]}]|| = {float(norms[idx]):.6g}, expected <= 1"
            )
        object.__setattr__(self, "phi", frozen(phi))

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.phi.shape[-1])

    @property
    def matrix(self) -> FloatArray:
        """``(nS |A|, d)`` one row per joint cell, cells in the game's flat order."""
        out: FloatArray = self.phi.reshape(-1, self.dim)
        return out

    def check_game(self, game: CooperativeMarkovGame) -> None:
        """Raise :class:`ModelError` unless the features cover ``game``'s joint cells."""
        if self.phi.shape[:-1] != game.r.shape:
            raise ModelError(
                f"phi has cell shape {self.phi.shape[:-1]}, game {game.name!r} has "
                f"{game.r.shape}"
            )

    @classmethod
    def one_hot(cls, game: CooperativeMarkovGame) -> CriticFeatures:
        """The tabular case: ``phi(s, a) = e_{(s, a)}``, ``d = nS |A|``."""
        d = game.n_states * game.n_joint_actions
        return cls(np.eye(d).reshape((*game.r.shape, d)), "one-hot")

    @classmethod
    def aggregation(cls, game: CooperativeMarkovGame, labels: npt.ArrayLike) -> CriticFeatures:
        """State-action aggregation: ``phi(s, a) = e_{labels[s, a]}``.

        Args:
            labels: integer array shaped like ``game.r``; cell ``(s, a)`` belongs to cluster
                ``labels[s, a]`` in ``[0, d)`` with ``d = labels.max() + 1``.
        """
        lab = np.asarray(labels)
        if lab.shape != game.r.shape or lab.dtype.kind not in "iu":
            raise ModelError(
                f"labels has shape {lab.shape} and dtype {lab.dtype}, expected integers of "
                f"shape {game.r.shape}"
            )
        if lab.min() < 0:
            raise ModelError(f"labels has entry {int(lab.min())}, expected >= 0")
        d = int(lab.max()) + 1
        return cls(np.eye(d)[lab], "aggregation")

    @classmethod
    def random(
        cls, game: CooperativeMarkovGame, dim: int, rng: np.random.Generator
    ) -> CriticFeatures:
        """Gaussian directions normalised to unit length, ``d = dim``."""
        if dim < 1:
            raise ModelError(f"dim = {dim!r}, expected >= 1")
        x = rng.standard_normal((*game.r.shape, dim))
        x /= np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
        return cls(x, "random")


@dataclass(frozen=True, eq=False)
class PessimisticCritic:
    """The pessimistic evaluation map of one dataset (module docstring).

    Attributes:
        game: the game the dataset was drawn from.
        offset: ``(nS |A|,)`` ``c = Phi Lambda^{-1} Phi_D^T r``.
        transition: ``(nS |A|, nS)`` ``C = Phi Lambda^{-1} Phi_D^T E``.
        bonus: ``(nS |A|,)`` ``Gamma(s, a) = beta_G ||phi(s, a)||_{Lambda^{-1}}``.
        bonus_coefficient: ``beta_G``.
        lambda_reg: ridge ``lambda``.
        counts: ``(nS |A|,)`` visits ``n(s, a)`` in the data.
        modulus: ``q = gamma ||C||_inf``, the sup-norm Lipschitz constant of the map
            (``pessimism.md#contraction``).
        monotone: ``C >= 0`` entrywise and ``c + gamma C 1 H <= H``: the map is monotone and
            its upper clip never binds, as :func:`solve_pessimistic` needs.
        route: ``"tabular"`` or ``"features"``.
    """

    game: CooperativeMarkovGame
    offset: FloatArray
    transition: FloatArray
    bonus: FloatArray
    bonus_coefficient: float
    lambda_reg: float
    counts: FloatArray
    modulus: float
    monotone: bool
    route: str

    @property
    def horizon(self) -> float:
        """``H = 1/(1 - gamma)``, the clip's upper end."""
        return 1.0 / (1.0 - self.game.gamma)

    def data_backup(self, V: FloatArray) -> FloatArray:
        """``(nS |A|,)`` ``phi.w(V) = c + gamma C V`` for a value ``V`` of shape ``(nS,)``."""
        out: FloatArray = self.offset + self.game.gamma * (self.transition @ V)
        return out

    def apply(self, pi: FloatArray, Q: FloatArray) -> FloatArray:
        """``T_pi Q`` for the joint policy matrix ``pi`` ``(nS, |A|)`` and ``Q`` ``(nS |A|,)``
        (flat cells)."""
        V = np.sum(pi * Q.reshape(pi.shape), axis=1)
        out: FloatArray = np.clip(self.data_backup(V) - self.bonus, 0.0, self.horizon)
        return out


def _check_coefficients(bonus_coefficient: float, lambda_reg: float) -> tuple[float, float]:
    b, lam = float(bonus_coefficient), float(lambda_reg)
    if not (math.isfinite(b) and b >= 0):
        raise ModelError(f"bonus_coefficient = {bonus_coefficient!r}, expected a finite beta >= 0")
    if not (math.isfinite(lam) and lam > 0):
        raise ModelError(f"lambda_reg = {lambda_reg!r}, expected a finite lambda > 0")
    return b, lam


def _finish_critic(
    game: CooperativeMarkovGame,
    offset: FloatArray,
    transition: FloatArray,
    bonus: FloatArray,
    coefficients: tuple[float, float],
    counts: FloatArray,
    route: str,
) -> PessimisticCritic:
    g = game.gamma
    H = 1.0 / (1.0 - g)
    row_abs = np.sum(np.abs(transition), axis=1)
    monotone = bool(np.all(transition >= 0)) and bool(
        np.all(offset + g * H * row_abs <= H * (1 + 4 * EPS_F64 * transition.shape[1]))
    )
    return PessimisticCritic(
        game=game,
        offset=read_only(offset),
        transition=read_only(transition),
        bonus=read_only(bonus),
        bonus_coefficient=coefficients[0],
        lambda_reg=coefficients[1],
        counts=read_only(counts),
        modulus=g * float(np.max(row_abs)),
        monotone=monotone,
        route=route,
    )


def tabular_critic(
    game: CooperativeMarkovGame,
    dataset: OfflineDataset,
    bonus_coefficient: float,
    lambda_reg: float = 1.0,
) -> PessimisticCritic:
    """The tabular case of SPEC section 6 from counts: ``Lambda = diag(n(s,a) + lambda)``,

        c(s,a) = R(s,a) / (n(s,a) + lambda),   C[(s,a), s'] = n(s,a,s') / (n(s,a) + lambda),
        Gamma(s,a) = beta_G / sqrt(n(s,a) + lambda),

    with ``R(s,a)`` the sum of the rewards observed at ``(s, a)``
    (``proofs_notes/pessimism.md#tabular``)."""
    coeffs = _check_coefficients(bonus_coefficient, lambda_reg)
    dataset.check_game(game)
    n_s, n_a = game.n_states, game.n_joint_actions
    cell = dataset.states * n_a + dataset.joint_actions
    n = np.bincount(cell, minlength=n_s * n_a).astype(np.float64)
    R = np.bincount(cell, weights=dataset.rewards, minlength=n_s * n_a)
    N = np.bincount(cell * n_s + dataset.next_states, minlength=n_s * n_a * n_s)
    denom = n + coeffs[1]
    transition = N.reshape(n_s * n_a, n_s).astype(np.float64) / denom[:, None]
    return _finish_critic(
        game, R / denom, transition, coeffs[0] / np.sqrt(denom), coeffs, n, "tabular"
    )


def feature_critic(
    game: CooperativeMarkovGame,
    dataset: OfflineDataset,
    features: CriticFeatures,
    bonus_coefficient: float,
    lambda_reg: float = 1.0,
) -> PessimisticCritic:
    """The general linear case of SPEC section 6 from the per-sample feature rows
    ``Phi_D = phi(s_i, a_i)``: ``Lambda = Phi_D^T Phi_D + lambda I`` by one Cholesky
    factorisation, then ``c``, ``C`` and ``Gamma`` of the module docstring."""
    coeffs = _check_coefficients(bonus_coefficient, lambda_reg)
    dataset.check_game(game)
    features.check_game(game)
    n_s, n_a = game.n_states, game.n_joint_actions
    cell = dataset.states * n_a + dataset.joint_actions
    Phi = features.matrix
    Phi_D = Phi[cell]
    d = features.dim
    Lam = Phi_D.T @ Phi_D + coeffs[1] * np.eye(d)
    select = scipy.sparse.csr_matrix(
        (np.ones(dataset.n_samples), (np.arange(dataset.n_samples), dataset.next_states)),
        shape=(dataset.n_samples, n_s),
    )
    M = np.asarray((select.T @ Phi_D).T)  # (d, nS): sum of phi_i over samples with s'_i = s'
    rhs = np.column_stack([Phi_D.T @ dataset.rewards, M, Phi.T])
    factor = scipy.linalg.cho_factor(Lam, lower=True)
    sol = scipy.linalg.cho_solve(factor, rhs)
    offset = Phi @ sol[:, 0]
    transition = Phi @ sol[:, 1 : 1 + n_s]
    quad = np.sum(Phi.T * sol[:, 1 + n_s :], axis=0)  # phi^T Lambda^{-1} phi per cell
    bonus = coeffs[0] * np.sqrt(np.maximum(quad, 0.0))
    n = np.bincount(cell, minlength=n_s * n_a).astype(np.float64)
    return _finish_critic(game, offset, transition, bonus, coeffs, n, "features")


@dataclass(frozen=True)
class PessimisticValues:
    """The pessimistic critic of one policy.

    Attributes:
        Q: ``(nS, |A^0|, ..., |A^{N-1}|)`` ``Qhat``, the computed fixed point.
        V: ``(nS,)`` ``Vhat(s) = sum_a pi(a|s) Qhat(s, a)``.
        J: ``rho . Vhat``, the pessimistic estimate of ``J(pi)``.
        localized: ``localized[m] = Qhat^{0:m}``, the ``pi``-marginals of ``Qhat`` (SPEC
            section 6: the localized critics are marginals of the one joint critic).
        residual: ``||T_pi Qhat - Qhat||_inf``, computed after the solve.
        error_bound: certified ``||Qhat - Qhat_true||_inf <= (residual + rounding)/(1 - q)``.
        iterations: map applications (iteration) or linear solves (active set).
        method: ``"iteration"`` or ``"active-set"``.
    """

    Q: FloatArray
    V: FloatArray
    J: float
    localized: tuple[FloatArray, ...]
    residual: float
    error_bound: float
    iterations: int
    method: str


def _rounding(critic: PessimisticCritic) -> float:
    """Rounding of one application of the map, in sup norm: the dot products
    ``pi . Q`` (``|A|`` terms of size ``H``) and ``c + gamma C V`` (``nS + 1`` terms of size at
    most ``|c| + gamma ||C||_inf H``), then the bonus subtraction."""
    H = critic.horizon
    n_a = critic.game.n_joint_actions
    scale = float(np.max(np.abs(critic.offset))) + critic.modulus * H + float(
        np.max(critic.bonus)
    )
    dots = (critic.transition.shape[1] + 3) * EPS_F64 * scale
    return float(dots + critic.modulus * (n_a + 1) * EPS_F64 * H)


def _values(
    critic: PessimisticCritic, policy: ConditionalPolicy, pi: FloatArray, Q: FloatArray,
    iterations: int, method: str,
) -> PessimisticValues:
    q = critic.modulus
    residual = float(np.max(np.abs(critic.apply(pi, Q) - Q)))
    bound = (residual + _rounding(critic)) / (1 - q)
    game = critic.game
    Qs = Q.reshape(game.r.shape)
    V = np.sum(pi * Q.reshape(pi.shape), axis=1)
    return PessimisticValues(
        Q=frozen(Qs),
        V=frozen(V),
        J=float(game.rho @ V),
        localized=localized_marginals(policy, Qs),
        residual=residual,
        error_bound=bound,
        iterations=iterations,
        method=method,
    )


def _check_policy(critic: PessimisticCritic, policy: ConditionalPolicy) -> FloatArray:
    if policy.game is not critic.game:
        raise PolicyError("the policy was built for a different game object than the critic")
    return policy.joint_matrix()


def evaluate_pessimistic(
    critic: PessimisticCritic,
    policy: ConditionalPolicy,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    start: FloatArray | None = None,
) -> PessimisticValues:
    """``Qhat = T_pi Qhat`` by iteration from ``start`` (default 0), stopped by the
    a-posteriori certificate of a ``q``-contraction (``pessimism.md#contraction``):

        ||Q_k - Qhat|| <= (q ||Q_k - Q_{k-1}|| + rho) / (1 - q),

    with ``rho`` the rounding of one application.

    Raises:
        SolverError: if ``q = gamma ||C||_inf >= 1`` (no certified fixed point for these
            features) or the certificate does not reach ``tol`` in ``max_iter`` steps.
    """
    if not tol > 0:
        raise ModelError(f"tol = {tol!r}, expected a positive tolerance")
    q = critic.modulus
    if not q < 1:
        raise SolverError(
            f"the pessimistic evaluation map has sup-norm modulus gamma ||C||_inf = {q:.4g} "
            ">= 1 for these features and data, so no fixed point is certified "
            "(proofs_notes/pessimism.md#contraction)"
        )
    pi = _check_policy(critic, policy)
    rho_step = _rounding(critic)
    Q: FloatArray
    if start is None:
        Q = np.zeros(critic.offset.shape)
    else:
        Q = as_float_array(start, "start").reshape(-1)
        if Q.shape != critic.offset.shape:
            raise ModelError(f"start has {Q.size} entries, expected {critic.offset.size}")
    k = 0
    while True:
        Q_new = critic.apply(pi, Q)
        k += 1
        bound = (q * float(np.max(np.abs(Q_new - Q))) + rho_step) / (1 - q)
        Q = Q_new
        if bound <= tol or q == 0.0:
            return _values(critic, policy, pi, Q, k, "iteration")
        if k >= max_iter:
            raise SolverError(
                f"pessimistic evaluation reached max_iter = {max_iter} with certified error "
                f"{bound:.3g} > tol = {tol:.3g}"
            )


def solve_pessimistic(
    critic: PessimisticCritic, policy: ConditionalPolicy, max_iter: int = 1000
) -> PessimisticValues:
    """The fixed point exactly, by policy iteration on the lower clip's active set
    (``pessimism.md#active-set``).

    For a monotone critic the fixed point solves ``Qhat = max(0, c - Gamma + gamma C Pi Qhat)``:
    an optimal stopping problem in which each cell either stops (value 0) or continues.  For
    the continuing set ``D`` the values solve the ``nS x nS`` system
    ``(I - gamma Pi D C) V = Pi D (c - Gamma)``; the set is then improved to
    ``{c - Gamma + gamma C V > 0}``.  Values increase monotonically and the set repeats after
    finitely many steps, at the fixed point.

    Raises:
        SolverError: for a critic that is not :attr:`PessimisticCritic.monotone`.
    """
    if not critic.monotone:
        raise SolverError(
            "solve_pessimistic needs a monotone critic (C >= 0, upper clip inactive); "
            "use evaluate_pessimistic for these features"
        )
    pi = _check_policy(critic, policy)
    g = critic.game.gamma
    n_s, n_a = pi.shape
    base = critic.offset - critic.bonus
    C3 = critic.transition.reshape(n_s, n_a, n_s)
    active = np.ones(n_s * n_a, dtype=bool)
    for it in range(1, max_iter + 1):
        w = pi * active.reshape(n_s, n_a)
        A = np.eye(n_s) - g * np.einsum("sa,sat->st", w, C3)
        V = np.linalg.solve(A, np.sum(w * base.reshape(n_s, n_a), axis=1))
        cont = base + g * (critic.transition @ V)
        new_active = cont > 0
        if np.array_equal(new_active, active):
            Q = np.where(active, cont, 0.0)
            return _values(critic, policy, pi, Q, it, "active-set")
        active = new_active
    raise SolverError(f"active-set iteration did not settle in max_iter = {max_iter} solves")


@dataclass(frozen=True)
class ValidityEvent:
    """The event of ``proofs_notes/pessimism.md#event`` at one value ``V``: the data backup is
    within ``Gamma`` of the true backup ``B V = r + gamma P V`` in every cell.

    Attributes:
        holds: ``max_{s,a} (|c + gamma C V - B V| - Gamma) <= 0``.
        margin: that maximum (``<= 0`` iff the event holds).
        deviation: ``(nS, |A^0|, ...)`` ``|c + gamma C V - B V|``.
        worst: the cell ``(s, a^0, ..., a^{N-1})`` attaining the margin.
    """

    holds: bool
    margin: float
    deviation: FloatArray
    worst: tuple[int, ...]


def _true_backup(game: CooperativeMarkovGame, V: FloatArray) -> FloatArray:
    mdp = game.tabular
    out: FloatArray = (mdp.r + game.gamma * np.einsum("sat,t->sa", mdp.P, V)).reshape(-1)
    return out


def validity_event(critic: PessimisticCritic, V: npt.ArrayLike) -> ValidityEvent:
    """Whether the validity event holds at ``V`` ``(nS,)``; computable for any dataset since
    the true model is known (``pessimism.md#event``)."""
    game = critic.game
    v = as_float_array(V, "V", shape=(game.n_states,))
    dev = np.abs(critic.data_backup(v) - _true_backup(game, v))
    margins = dev - critic.bonus
    i = int(np.argmax(margins))
    worst = np.unravel_index(i, game.r.shape)
    return ValidityEvent(
        holds=bool(margins[i] <= 0),
        margin=float(margins[i]),
        deviation=frozen(dev.reshape(game.r.shape)),
        worst=tuple(int(j) for j in worst),
    )


def tabular_validity_coefficient(
    critic: PessimisticCritic, delta: float
) -> float:
    """A bonus coefficient ``beta_G`` under which, for the tabular critic, the validity event
    holds at *every* ``V in [0, H]^S`` simultaneously with probability at least ``1 - delta``
    over the rewards and next states given the visited pairs (``pessimism.md#event``):

        beta_G = H ( sqrt( log(2 nS |A| M^nS / delta) / 2 ) + sqrt(lambda) + gamma ),
        M = ceil( sqrt(n_max + lambda) ),

    Hoeffding per cell and per point of a sup-norm net of spacing ``H / sqrt(n_max + lambda)``,
    union-bounded; ``sqrt(lambda)`` pays the ridge's shrinkage and ``gamma`` the net."""
    if critic.route != "tabular":
        raise ModelError("tabular_validity_coefficient is derived for the tabular critic only")
    if not 0 < delta < 1:
        raise ModelError(f"delta = {delta!r}, expected 0 < delta < 1")
    game = critic.game
    H = critic.horizon
    lam = critic.lambda_reg
    M = math.ceil(math.sqrt(float(np.max(critic.counts)) + lam))
    n_cells = game.n_states * game.n_joint_actions
    log_term = math.log(2 * n_cells / delta) + game.n_states * math.log(M)
    return H * (math.sqrt(log_term / 2) + math.sqrt(lam) + game.gamma)


@dataclass(frozen=True)
class PessimismBound:
    """SPEC section 6's bound on the average gap, on the validity event.

    Attributes:
        optimisation: ``B(K)`` of section 5 (``mappo-bound.md#bound``), valid because the
            clipped critics lie in ``[0, H]``.
        expected_bonus: ``E_{(s,a) ~ d*}[Gamma(s, a)]`` under the comparator's normalised
            occupancy ``d*``.
        model: ``(2/(1 - gamma)) E_{d*}[Gamma]``.
        total: ``optimisation + model``.
    """

    optimisation: float
    expected_bonus: float
    model: float
    total: float


def optimal_comparator(game: CooperativeMarkovGame) -> ConditionalPolicy:
    """An optimal deterministic policy (policy iteration's greedy), as a sequential policy."""
    greedy = policy_iteration(game.tabular).greedy
    flat = np.zeros((game.n_states, game.n_joint_actions))
    flat[np.arange(game.n_states), greedy] = 1.0
    return ConditionalPolicy.from_joint(game, flat)


def pessimism_bound(
    critic: PessimisticCritic, K: int, beta: float, comparator: ConditionalPolicy
) -> PessimismBound:
    """``B(K) + (2/(1-gamma)) E_{d*}[Gamma]`` (``proofs_notes/pessimism.md#bound``)."""
    game = critic.game
    vals = evaluate_game(game, comparator)
    d_star = vals.nu[:, None] * comparator.joint_matrix()
    eb = float(np.sum(d_star.reshape(-1) * critic.bonus))
    opt = mappo_bound(K, beta, game.n_agents, game.log_action_count, game.gamma)
    model = 2.0 * eb / (1.0 - game.gamma)
    return PessimismBound(optimisation=opt, expected_bonus=eb, model=model, total=opt + model)


Solver = Literal["auto", "active-set", "iteration"]


@dataclass(frozen=True)
class PessimisticHistory:
    """Record of a pessimistic MA-PPO run (SPEC section 6).

    Attributes:
        J: ``(K+1,)`` exact ``J(pi_k)`` (the true oracle).
        J_hat: ``(K+1,)`` the pessimistic estimate ``rho . Vhat_k`` of the same iterates.
        event: ``(K+1,)`` whether the validity event holds at ``Vhat_k``.
        event_margin: ``(K+1,)`` its margin (:class:`ValidityEvent`).
        critic_error: ``(K+1,)`` the certified error of each computed ``Qhat_k``.
        critic_gap: ``(K+1,)`` measured ``||Qhat_k - Q_{pi_k}||_inf`` against the exact oracle.
        J_star: exact ``J`` of the optimal comparator ``pi*`` (policy iteration).
        betas: ``(K,)`` the ``beta_k`` used.
        average_gap: ``(1/K) sum_{k<K} (J* - J(pi_k))``.
        last_gap: ``J* - J(pi_K)``.
        bound: :class:`PessimismBound`; its ``optimisation`` and ``total`` are NaN unless the
            schedule is ``"sqrt-K"``, the one ``B(K)`` is derived for.
        optimisation_terms: ``(K,)`` ``(1/(1-gamma)) E_{s~nu*} <Qhat_k(s,.), pi*(.|s) -
            pi_k(.|s)>``.
        model_terms: ``(K,)`` ``(1/(1-gamma)) E_{d*}[B Vhat_k - Qhat_k]``.
        pessimism_terms: ``(K,)`` ``J(pi_k) - J_hat_k``.  For every ``k`` exactly
            ``J* - J(pi_k) = optimisation_k + model_k - pessimism_k``
            (``pessimism.md#decomposition``).
        iterates: ``pi_0, ..., pi_K``.
        final: ``pi_K``, the learned policy.
    """

    J: FloatArray
    J_hat: FloatArray
    event: npt.NDArray[np.bool_]
    event_margin: FloatArray
    critic_error: FloatArray
    critic_gap: FloatArray
    J_star: float
    betas: FloatArray
    average_gap: float
    last_gap: float
    bound: PessimismBound
    optimisation_terms: FloatArray
    model_terms: FloatArray
    pessimism_terms: FloatArray
    iterates: tuple[ConditionalPolicy, ...]
    final: ConditionalPolicy

    @property
    def event_all(self) -> bool:
        """Whether the event held at every ``Vhat_k``, ``k < K`` (what the bound needs)."""
        return bool(np.all(self.event[:-1]))


def run_pessimistic_mappo(
    game: CooperativeMarkovGame,
    dataset: OfflineDataset,
    K: int,
    beta: float,
    bonus_coefficient: float,
    *,
    lambda_reg: float = 1.0,
    features: CriticFeatures | None = None,
    schedule: Schedule = "sqrt-K",
    solver: Solver = "auto",
    tol: float = 1e-10,
) -> PessimisticHistory:
    """Pessimistic MA-PPO from the uniform policy (SPEC section 6): at each ``k`` the critic
    ``Qhat_k`` of ``pi_k`` from the data, its marginals ``Qhat_k^{0:m}``, and the MA-PPO step
    ``pi^m_{k+1} ∝ pi^m_k exp(Qhat_k^{0:m} / beta_k)`` of section 5 for every agent.

    ``features=None`` uses :func:`tabular_critic`, otherwise :func:`feature_critic`.
    ``solver="auto"`` solves monotone critics exactly (:func:`solve_pessimistic`) and
    iterates otherwise (:func:`evaluate_pessimistic`).

    Note: the actor is the tabular sequential policy and the step is the exact mirror-descent
    step on the pessimistic critics; the linear function approximation is in the critic.
    """
    if K < 1:
        raise ModelError(f"K = {K!r}, expected K >= 1")
    if not beta > 0:
        raise ModelError(f"beta = {beta!r}, expected > 0")
    if solver not in ("auto", "active-set", "iteration"):
        raise ModelError(f"solver = {solver!r}, expected 'auto', 'active-set' or 'iteration'")
    if features is None:
        critic = tabular_critic(game, dataset, bonus_coefficient, lambda_reg)
    else:
        critic = feature_critic(game, dataset, features, bonus_coefficient, lambda_reg)
    use_exact = solver == "active-set" or (solver == "auto" and critic.monotone)
    comparator = optimal_comparator(game)
    comp_vals = evaluate_game(game, comparator)
    nu_star = comp_vals.nu
    pi_star = comparator.joint_matrix()
    d_star = (nu_star[:, None] * pi_star).reshape(-1)
    g = game.gamma
    policy = ConditionalPolicy.uniform(game)
    iterates = [policy]
    Js, J_hats, events, margins, errors, gaps = [], [], [], [], [], []
    betas = np.empty(K)
    opt_terms, model_terms, pess_terms = np.empty(K), np.empty(K), np.empty(K)
    start: FloatArray | None = None
    for k in range(K + 1):
        if use_exact:
            pv = solve_pessimistic(critic, policy)
        else:
            pv = evaluate_pessimistic(critic, policy, tol=tol, start=start)
            start = pv.Q
        true = evaluate_game(game, policy)
        ev = validity_event(critic, pv.V)
        Js.append(true.J)
        J_hats.append(pv.J)
        events.append(ev.holds)
        margins.append(ev.margin)
        errors.append(pv.error_bound)
        gaps.append(float(np.max(np.abs(pv.Q - true.Q))))
        if k == K:
            break
        Qf = pv.Q.reshape(-1)
        pi_k = policy.joint_matrix()
        diff = ((pi_star - pi_k) * pv.Q.reshape(pi_k.shape)).sum(axis=1)
        opt_terms[k] = float(nu_star @ diff) / (1 - g)
        model_terms[k] = float(d_star @ (_true_backup(game, pv.V) - Qf)) / (1 - g)
        pess_terms[k] = true.J - pv.J
        betas[k] = beta_at(beta, k, K, schedule)
        policy = mirror_descent_step(policy, pv.localized, float(betas[k]))
        iterates.append(policy)
    J = np.asarray(Js)
    gaps_J = comp_vals.J - J
    bound = pessimism_bound(critic, K, beta, comparator)
    if schedule != "sqrt-K":  # B(K) is derived for beta_k = beta sqrt(K) only
        bound = dataclasses.replace(
            bound, optimisation=math.nan, total=math.nan
        )
    return PessimisticHistory(
        J=frozen(J),
        J_hat=frozen(J_hats),
        event=np.asarray(events, dtype=bool),
        event_margin=frozen(margins),
        critic_error=frozen(errors),
        critic_gap=frozen(gaps),
        J_star=comp_vals.J,
        betas=frozen(betas),
        average_gap=float(np.mean(gaps_J[:K])),
        last_gap=float(gaps_J[K]),
        bound=bound,
        optimisation_terms=frozen(opt_terms),
        model_terms=frozen(model_terms),
        pessimism_terms=frozen(pess_terms),
        iterates=tuple(iterates),
        final=policy,
    )
