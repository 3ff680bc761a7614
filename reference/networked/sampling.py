"""Vectorised trajectory sampling for the networked MDP (SPEC sections 2 and 4).

Algorithm 1 of Ying et al. (SPEC section 4) estimates occupancies, truncated critics and
gradients from ``B`` trajectories of horizon ``H`` drawn under the localized policy.  One
step of the joint chain factorises over agents (SPEC section 2)::

    a_i^t     ~ pi_i( . | o_i^t ),           o_i^t = s^t_{N_i^beta}
    s_i^{t+1} ~ P_i( . | s^t_{N_i}, a_i^t ),

independently across agents given ``s^t``, so the sampler never forms a joint matrix: it
works for hundreds of agents (a ring of ``n = 300`` binary agents is a routine case).

Layout.  All ``B`` trajectories advance together.  Step ``t`` works on the agent-major
block ``z^t = (s^t_0..s^t_{n-1}, a^t_0..a^t_{n-1}, 1)`` of shape ``(2n + 1, B)``.
:class:`Sampler` precomputes, once per (model, policy), two lookups (one for the policy,
one for the kernels), each made of

* a sparse ``(n, 2n + 1)`` *row matrix* ``M`` whose product ``(M z^t)_i`` is agent ``i``'s
  flat row in one concatenated table: ``offset_i + index(s^t_{N_i^beta})`` for the
  policy, ``offset_i + |A_i| index(s^t_{N_i}) + a^t_i`` for the kernel, with the
  mixed-radix index of SPEC section 0 (lowest agent most significant).  ``M`` is the
  padded neighbour-index matrix with radix weights, its zero-weight padding dropped, plus
  the action and offset columns; ``M z`` performs the gather, the weighted sum and the
  offsets in one compiled pass (measured no slower than a padded gather followed by a
  multiply, a sum and two additions, and with fewer calls);
* a table of *thresholds*: every row ``p`` of every ``pi_i`` (resp. ``P_i``, with the
  action folded into the row index) becomes its cumulative sums ``c_k = p_0 + ... + p_k``
  for ``k < W - 1``, padded to the largest width ``W``, stored column by column.

Each step draws one batch of ``2 n B`` uniforms and samples by inverse CDF,
``x = #{k : c_k <= u}`` for ``u ~ U[0, 1)``, which has ``P(x = k) = c_k - c_{k-1} = p_k``:
first ``a^t`` from the policy rows of ``z^t``, then ``s^{t+1}`` from the kernel rows of
``z^t`` (which now holds ``a^t``).  Rounding guard: the cumulative value at (and after)
the last positive entry of every row is set to exactly 1, and padding is 1, so ``u < 1``
can never select a padded outcome or a zero-probability outcome past the end of the row,
whatever the rounding of the cumsum.  The only Python loops inside
:meth:`Sampler.rollout` run over time steps and over the (few) threshold columns; none
runs over agents or trajectories.

:class:`Trajectories` exposes the ``z`` buffer as ``(B, H + 1, n)`` states and
``(B, H, n)`` actions: read-only, non-C-contiguous views (no transposing copy).  Uniforms
are drawn as ``rng.random((2, n, B))`` per step (actions, then next states), so the
result is a deterministic function of the generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_array

from reference._arrays import FloatArray, IntArray, check_gamma, check_rng
from reference.errors import ModelError
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy

__all__ = [
    "Sampler",
    "Trajectories",
    "geometric_horizons",
    "rollout",
    "sample_initial",
]


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Trajectories:
    """``B`` sampled trajectories of horizon ``H`` of a networked MDP (SPEC section 4).

    Attributes:
        states: ``(B, H + 1, n)`` int64, ``states[b, t, i] = s_i^{b,t}`` for ``t = 0..H``
            (read-only; may be a non-contiguous view).
        actions: ``(B, H, n)`` int64, ``actions[b, t, i] = a_i^{b,t}`` for ``t < H``
            (read-only; may be a non-contiguous view).
        gamma: the model's discount, so that ``discounts()`` needs no model.
    """

    states: IntArray
    actions: IntArray
    gamma: float

    def __post_init__(self) -> None:
        s, a = np.asarray(self.states), np.asarray(self.actions)
        if s.ndim != 3 or a.ndim != 3:
            raise ModelError(
                f"states has shape {s.shape} and actions {a.shape}, expected (B, H+1, n) "
                "and (B, H, n)"
            )
        if a.shape != (s.shape[0], s.shape[1] - 1, s.shape[2]):
            raise ModelError(
                f"actions has shape {a.shape}, expected {(s.shape[0], s.shape[1] - 1, s.shape[2])}"
                f" to match states {s.shape}"
            )
        object.__setattr__(self, "gamma", check_gamma(self.gamma))
        for name, arr in (("states", s), ("actions", a)):
            view = np.asarray(arr, dtype=np.int64).view()  # never flips the caller's flags
            view.setflags(write=False)
            object.__setattr__(self, name, view)

    @property
    def batch(self) -> int:
        """Number of trajectories ``B``."""
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        """Number of transitions ``H`` (there are ``H + 1`` states per trajectory)."""
        return int(self.actions.shape[1])

    @property
    def n(self) -> int:
        """Number of agents."""
        return int(self.states.shape[2])

    def discounts(self) -> FloatArray:
        """``(H,)`` the weights ``gamma^t``, ``t = 0..H-1``, of SPEC section 4, step 1."""
        out: FloatArray = self.gamma ** np.arange(self.horizon, dtype=np.float64)
        return out


# ---------------------------------------------------------------------------- validation
def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ModelError(f"{name} = {value!r}, expected an integer >= {minimum}")
    return int(value)


def _check_rng(rng: Any) -> np.random.Generator:
    return check_rng(rng)


def _check_local_values(value: Any, name: str, batch: int, sizes: Sequence[int]) -> IntArray:
    """``value`` as a ``(batch, n)`` int64 array with ``0 <= value[:, i] < sizes[i]``."""
    arr = np.asarray(value)
    n = len(sizes)
    if arr.shape != (batch, n):
        raise ModelError(f"{name} has shape {arr.shape}, expected (batch, n) = {(batch, n)}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ModelError(f"{name} has dtype {arr.dtype}, expected an integer dtype")
    out = arr.astype(np.int64)
    bad = (out < 0) | (out >= np.asarray(sizes, dtype=np.int64)[None, :])
    if bad.any():
        b, i = (int(x) for x in np.argwhere(bad)[0])
        raise ModelError(
            f"{name}[{b}, {i}] = {int(out[b, i])}, expected 0 <= {name}[:, {i}] < {sizes[i]}"
        )
    return out


# ---------------------------------------------------------------------------- tables
def _thresholds(blocks: Sequence[FloatArray], width: int) -> FloatArray:
    """Stack the rows of ``blocks`` into a ``(width - 1, rows)`` threshold table.

    Column ``r`` holds ``c_k = p_0 + ... + p_k`` (``k < width - 1``) of row ``r``, with
    ``c_k = 1`` exactly from the row's last positive entry on and for padding, so that
    ``#{k : c_k <= u}`` with ``u in [0, 1)`` samples ``p`` (module docstring).
    """
    rows = []
    for block in blocks:
        p = block.reshape(-1, block.shape[-1])
        c = np.ones((p.shape[0], width), dtype=np.float64)
        c[:, : p.shape[1]] = np.cumsum(p, axis=1)
        last = p.shape[1] - 1 - np.argmax(p[:, ::-1] > 0.0, axis=1)  # last positive entry
        c[np.arange(width)[None, :] >= last[:, None]] = 1.0
        rows.append(c[:, : width - 1])
    table = np.ascontiguousarray(np.concatenate(rows, axis=0).T)
    table.setflags(write=False)
    return table


def _row_matrix(
    sets: Sequence[Sequence[int]],
    n_states: Sequence[int],
    scale: Sequence[int],
    offsets: Sequence[int],
    with_action: bool,
) -> Any:
    """Sparse int64 ``M`` of shape ``(n, 2n + 1)`` with ``(M z)_i`` = agent ``i``'s flat row.

    ``z = (s_0..s_{n-1}, a_0..a_{n-1}, 1)`` stacks a joint state, a joint action and a
    constant 1.  Row ``i`` holds the mixed-radix weights of ``s_{sets[i]}`` (``sets[i]``
    increasing, lowest agent most significant, SPEC section 0) times ``scale[i]``:
    ``M[i, j] = scale[i] * prod_{l in sets[i], l > j} |S_l|`` for ``j in sets[i]``; weight 1
    on ``a_i`` if ``with_action``; and ``offsets[i]`` on the constant.  So
    ``(M z)_i = offsets[i] + scale[i] * index(s_{sets[i]}) [+ a_i]``.
    """
    n = len(sets)
    rows, cols, vals = [], [], []
    for i, members in enumerate(sets):
        w = int(scale[i])
        for j in reversed(members):
            rows.append(i)
            cols.append(int(j))
            vals.append(w)
            w *= int(n_states[j])
        if with_action:
            rows.append(i)
            cols.append(n + i)
            vals.append(1)
        rows.append(i)
        cols.append(2 * n)
        vals.append(int(offsets[i]))
    matrix = csr_array(
        (np.asarray(vals, dtype=np.int64), (np.asarray(rows), np.asarray(cols))),
        shape=(n, 2 * n + 1),
    )
    matrix.sort_indices()
    return matrix


def _offsets(sizes: Sequence[int]) -> list[int]:
    """Start of each agent's block in a concatenated table of blocks of ``sizes`` rows."""
    return [0, *np.cumsum(np.asarray(sizes, dtype=np.int64))[:-1].tolist()]


@dataclass(frozen=True, eq=False)
class _Lookup:
    """Flat rows ``M z`` into one threshold table (see :func:`_row_matrix`), and
    inverse-CDF draws from those rows (module docstring)."""

    matrix: Any  # (n, 2n + 1) sparse int64
    thresholds: FloatArray  # (W - 1, rows): column-major cumulative sums

    def draw(self, z: IntArray, u: FloatArray, out: IntArray) -> None:
        """``out = #{k : c_k[M z] <= u}`` elementwise (inverse CDF); ``u in [0, 1)``.

        ``z`` is ``(2n + 1, B)`` (states, actions, ones), ``u`` and ``out`` are ``(n, B)``.
        """
        if self.thresholds.shape[0] == 0:
            out.fill(0)
            return
        rows = self.matrix @ z
        np.greater_equal(u, np.take(self.thresholds[0], rows), out=out, casting="unsafe")
        for column in self.thresholds[1:]:
            out += u >= np.take(column, rows)


def _initial_table(model: NetworkedMDP) -> FloatArray:
    if isinstance(model.rho, np.ndarray):
        return _thresholds([model.rho[None, :]], model.rho.size + 1)[:, 0]
    return _thresholds([r[None, :] for r in model.rho], max(model.n_states))


def _draw_initial(
    model: NetworkedMDP, table: FloatArray, batch: int, rng: np.random.Generator
) -> IntArray:
    """``(n, B)`` agent-major initial states from a table of :func:`_initial_table`."""
    n = model.n
    if isinstance(model.rho, np.ndarray):
        u = rng.random(batch)
        joint = np.searchsorted(table, u, side="right")  # #{k : c_k <= u}
        digits = np.unravel_index(joint, model.n_states)
        return np.stack([d.astype(np.int64) for d in digits], axis=0)
    u = rng.random((n, batch))
    out = np.zeros((n, batch), dtype=np.int64)
    for column in table:
        out += u >= column[:, None]
    return out


# ---------------------------------------------------------------------------- sampler
@dataclass(frozen=True, eq=False)
class Sampler:
    """Precomputed tables for sampling a :class:`LocalizedSoftmaxPolicy` on a
    :class:`NetworkedMDP` (SPEC sections 2 and 4); see the module docstring for the layout.

    Attributes:
        model: the networked MDP.
        policy: a localized policy on ``model`` (same graph, state and action counts).
    """

    model: NetworkedMDP
    policy: LocalizedSoftmaxPolicy
    _policy: _Lookup = field(init=False, repr=False)
    _kernel: _Lookup = field(init=False, repr=False)
    _initial: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        model, policy = self.model, self.policy
        if not isinstance(model, NetworkedMDP):
            raise ModelError(f"model is a {type(model).__name__}, expected a NetworkedMDP")
        if not isinstance(policy, LocalizedSoftmaxPolicy):
            raise ModelError(
                f"policy is a {type(policy).__name__}, expected a LocalizedSoftmaxPolicy"
            )
        pm = policy.model
        if pm is not model and (
            pm.graph != model.graph
            or pm.n_states != model.n_states
            or pm.n_actions != model.n_actions
        ):
            raise ModelError(
                "policy was built for a different model: graph, n_states or n_actions differ "
                f"(policy n_states = {pm.n_states}, model n_states = {model.n_states})"
            )
        n = model.n
        pol = _Lookup(
            _row_matrix(
                policy.observed,
                model.n_states,
                [1] * n,
                _offsets([p.shape[0] for p in policy.probs]),
                with_action=False,
            ),
            _thresholds(policy.probs, max(model.n_actions)),
        )
        # kernel row of agent i: offset_i + (index of s_{N_i}) * |A_i| + a_i
        ker = _Lookup(
            _row_matrix(
                model.neighbourhoods,
                model.n_states,
                model.n_actions,
                _offsets([k.shape[0] * k.shape[1] for k in model.kernels]),
                with_action=True,
            ),
            _thresholds(model.kernels, max(model.n_states)),
        )
        object.__setattr__(self, "_policy", pol)
        object.__setattr__(self, "_kernel", ker)
        object.__setattr__(self, "_initial", _initial_table(model))

    def sample_initial(self, batch: int, rng: np.random.Generator) -> IntArray:
        """``(B, n)`` i.i.d. draws of ``s^0 ~ rho`` (see :func:`sample_initial`)."""
        batch = _check_count(batch, "batch", 1)
        return np.ascontiguousarray(
            _draw_initial(self.model, self._initial, batch, _check_rng(rng)).T
        )

    def rollout(
        self,
        batch: int,
        horizon: int,
        rng: np.random.Generator,
        initial_states: npt.ArrayLike | None = None,
        first_actions: npt.ArrayLike | None = None,
    ) -> Trajectories:
        """``B`` trajectories of ``H`` steps of the joint chain (SPEC section 4, step 1).

        ``s^0 ~ rho`` (or ``initial_states``); for ``t < H``:
        ``a_i^t ~ pi_i(. | s^t_{N_i^beta})`` for every agent (``a^0 = first_actions`` if
        given) and ``s_i^{t+1} ~ P_i(. | s^t_{N_i}, a_i^t)``, independently across agents
        and trajectories given ``s^t``.

        Args:
            batch: number of trajectories ``B >= 1``.
            horizon: number of transitions ``H >= 0``.
            rng: the only source of randomness.
            initial_states: ``(B, n)`` integer ``s^0`` with ``0 <= s_i < |S_i|``; default
                drawn from ``rho``.
            first_actions: ``(B, n)`` integer ``a^0`` with ``0 <= a_i < |A_i|`` (e.g. to
                estimate ``Q(s, a)``); needs ``H >= 1``.  Default drawn from the policy.
        """
        model = self.model
        n = model.n
        batch = _check_count(batch, "batch", 1)
        horizon = _check_count(horizon, "horizon", 0)
        rng = _check_rng(rng)
        fixed_s: IntArray | None = None
        fixed_a: IntArray | None = None
        if initial_states is not None:
            fixed_s = _check_local_values(initial_states, "initial_states", batch, model.n_states)
        if first_actions is not None:
            if horizon == 0:
                raise ModelError(
                    "first_actions given with horizon = 0: there is no step to apply them to"
                )
            fixed_a = _check_local_values(first_actions, "first_actions", batch, model.n_actions)
        # z[t] = (s^t, a^t, 1) stacked agent-major: one (2n + 1, B) block per step, the
        # vector the row matrices act on; a^H is never drawn (outside the actions view).
        z = np.empty((horizon + 1, 2 * n + 1, batch), dtype=np.int64)
        z[:, 2 * n] = 1
        if fixed_s is not None:
            z[0, :n] = fixed_s.T
        else:
            z[0, :n] = _draw_initial(model, self._initial, batch, rng)
        u = np.empty((2, n, batch), dtype=np.float64)
        for t in range(horizon):
            rng.random(out=u)
            if t == 0 and fixed_a is not None:
                z[0, n : 2 * n] = fixed_a.T
            else:
                self._policy.draw(z[t], u[0], z[t, n : 2 * n])
            self._kernel.draw(z[t], u[1], z[t + 1, :n])
        states = z[:, :n].transpose(2, 0, 1)
        actions = z[:horizon, n : 2 * n].transpose(2, 0, 1)
        return Trajectories(states, actions, model.gamma)


# ---------------------------------------------------------------------------- functions
def sample_initial(model: NetworkedMDP, batch: int, rng: np.random.Generator) -> IntArray:
    """``(B, n)`` int64 i.i.d. initial states ``s^0 ~ rho`` (SPEC sections 2 and 4).

    Product ``rho = prod_i rho_i``: every agent's ``s_i`` is drawn independently by inverse
    CDF, all agents and trajectories at once.  Joint ``rho``: the joint index is drawn by
    inverse CDF over the joint vector and unravelled mixed radix (agent 0 most
    significant, SPEC section 0).
    """
    if not isinstance(model, NetworkedMDP):
        raise ModelError(f"model is a {type(model).__name__}, expected a NetworkedMDP")
    batch = _check_count(batch, "batch", 1)
    rng = _check_rng(rng)
    return np.ascontiguousarray(_draw_initial(model, _initial_table(model), batch, rng).T)


def rollout(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    batch: int,
    horizon: int,
    rng: np.random.Generator,
    initial_states: npt.ArrayLike | None = None,
    first_actions: npt.ArrayLike | None = None,
) -> Trajectories:
    """``B`` trajectories of horizon ``H`` under ``policy`` (SPEC section 4, step 1).

    Builds a :class:`Sampler` and calls :meth:`Sampler.rollout`; reuse a ``Sampler`` to
    avoid rebuilding its tables for repeated rollouts of the same policy.
    """
    return Sampler(model, policy).rollout(batch, horizon, rng, initial_states, first_actions)


def geometric_horizons(gamma: float, batch: int, rng: np.random.Generator) -> IntArray:
    """``(B,)`` int64 i.i.d. times ``T`` with ``P(T = t) = (1 - gamma) gamma^t``, ``t >= 0``.

    The geometric-time variant of SPEC section 4, step 3: ``E[T] = gamma / (1 - gamma)`` and
    ``P(T >= t) = gamma^t``, so ``E f(s^T, a^T) = (1 - gamma) sum_t gamma^t E f(s^t, a^t)``.

    Note: numpy's ``Generator.geometric(p)`` counts trials up to the first success and so
    starts at 1 (``P(X = k) = (1 - p)^{k-1} p``, ``k >= 1``); we return ``X - 1`` with
    ``p = 1 - gamma``.  ``gamma = 0`` gives ``T = 0`` always.
    """
    g = check_gamma(gamma)
    batch = _check_count(batch, "batch", 1)
    rng = _check_rng(rng)
    out: IntArray = rng.geometric(1.0 - g, size=batch).astype(np.int64) - 1
    return out
