"""Time the vectorised trajectory sampler on binary rings against two in-run baselines.

What is measured
----------------
For every ``n`` in ``--n`` (default 10 and 100) the script builds a networked MDP on the
ring of ``n`` agents with two local states and two local actions per agent, local kernels
with Dirichlet(1, 1) rows, ``rho_i`` Dirichlet(1, 1), ``gamma = 0.9`` and a localized
softmax policy of observation radius ``beta = 1`` with standard normal ``theta_i``.  The
instance with ``n`` agents draws from ``SeedSequence(--seed, spawn_key=(n,))`` (recorded in
the ``--json`` rows), so it does not depend on the other sizes requested.  It then times, in
the same process, three ways of producing ``B * H * n`` agent-steps (``B = --batch``
trajectories of ``H = --horizon`` steps):

* **sampler** -- :meth:`reference.networked.sampling.Sampler.rollout` on a ``Sampler``
  built once (its one-off setup time is reported separately): all agents and trajectories
  advance together, two uniforms per agent-step, output ``(B, H + 1, n)`` states and
  ``(B, H, n)`` actions.
* **loop** -- :func:`loop_rollout` below, the straightforward implementation with Python
  loops over steps and agents and numpy operations over the batch.  Per-agent cumulative
  tables (``cumsum`` of every row of ``pi_i`` and ``P_i``) and mixed-radix weight vectors
  are built once before timing.  Then for every step ``t`` and every agent ``i``, in that
  order: the observation index ``o = s^t[:, N_i^beta] @ w_obs_i``; one call
  ``rng.random(B)``; the action ``a_i = #{k < |A_i| - 1 : cdf_pi_i[o, k] <= u}``; the kernel
  row ``r = s^t[:, N_i] @ w_N_i``; a second ``rng.random(B)``; the next state
  ``s_i' = #{k < |S_i| - 1 : cdf_P_i[r, a_i, k] <= u}``; both written into the same output
  arrays as the sampler's.  It makes ``2 H n`` generator calls of ``B`` uniforms each.
* **scalar** -- :func:`scalar_rollout`, the per-agent-step Python loop: loops over
  trajectories, steps and agents, one ``rng.random()`` scalar per draw, inverse CDF by
  ``bisect`` on Python lists; timed on ``SCALAR_BATCH`` trajectories.
* **floor** -- the cost of the randomness alone: ``H`` calls ``rng.random(out=buf)`` into a
  preallocated ``(2, n, B)`` buffer, i.e. the same ``2 B H n`` uniforms the sampler draws,
  in the same chunks, with nothing else.

Each measurement repeats its routine until at least ``--min-seconds`` have passed
(calibrated by one untimed call) and reports the best of ``REPEATS`` such measurements
(``time.perf_counter``) as agent-steps per second.  Ratios: ``sampler / loop`` (target at
least 100) and ``sampler / floor`` (target at least 0.25).

An upper limit worth knowing when reading ``sampler / loop``: no sampler that draws its
uniforms with ``rng.random`` can beat the floor, so ``sampler / loop <= floor / loop``; the
script prints ``floor / loop`` as well.  With a batch of ``B = 1024`` the loop's per-call
overhead is shared by 1024 trajectories, so ``floor / loop`` is far below 100 and the first
target cannot be met by any sampler on this baseline (see the printed numbers).

Run from the repository root::

    python bench/sampler.py [--n 10 100] [--batch 1024] [--horizon 50] [--seed 0]
                            [--min-seconds 0.5] [--json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: import reference/ from this working tree
    sys.path.insert(0, str(_ROOT))

from reference._arrays import FloatArray, IntArray  # noqa: E402
from reference.networked import Graph, LocalizedSoftmaxPolicy, NetworkedMDP  # noqa: E402
from reference.networked.sampling import Sampler  # noqa: E402

GAMMA = 0.9
"""Discount of every instance (the sampler does not use it)."""

BETA = 1
"""Observation radius of the policy."""

REPEATS = 3
"""Every routine reports the best of this many measurements."""

SAMPLER_TO_LOOP_TARGET = 100.0
SAMPLER_TO_FLOOR_TARGET = 0.25
SCALAR_BATCH = 8
"""Trajectories timed for the scalar loop (its rate per agent-step is batch-independent)."""


# ---------------------------------------------------------------------- instances
def ring_instance(n: int, seed: int) -> tuple[NetworkedMDP, LocalizedSoftmaxPolicy]:
    """Binary ring with Dirichlet(1, 1) kernel rows and ``rho_i``, random policy (``beta = 1``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n,)))
    graph = Graph.ring(n)
    model = NetworkedMDP.random(graph, (2,) * n, (2,) * n, rng, gamma=GAMMA)
    return model, LocalizedSoftmaxPolicy.random(model, BETA, rng)


# ---------------------------------------------------------------------- baselines
def _radix(agents: Sequence[int], sizes: Sequence[int]) -> IntArray:
    """Weights ``w`` with ``s[agents] @ w`` the mixed-radix index, lowest agent most significant."""
    w = np.ones(len(agents), dtype=np.int64)
    for k in range(len(agents) - 2, -1, -1):
        w[k] = w[k + 1] * sizes[agents[k + 1]]
    return w


def loop_rollout(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    batch: int,
    horizon: int,
    rng: np.random.Generator,
    s0: IntArray,
) -> tuple[IntArray, IntArray]:
    """The per-agent Python-loop sampler described in the module docstring.

    Returns ``(B, H + 1, n)`` states and ``(B, H, n)`` actions starting from ``s0`` ``(B, n)``.
    """
    n = model.n
    obs = [np.asarray(o) for o in policy.observed]
    nbs = [np.asarray(nb) for nb in model.neighbourhoods]
    w_obs = [_radix(o, model.n_states) for o in policy.observed]
    w_nb = [_radix(nb, model.n_states) for nb in model.neighbourhoods]
    cdf_pi: list[FloatArray] = [np.cumsum(p, axis=-1)[:, :-1] for p in policy.probs]
    cdf_P: list[FloatArray] = [np.cumsum(k, axis=-1)[:, :, :-1] for k in model.kernels]
    states = np.empty((batch, horizon + 1, n), dtype=np.int64)
    actions = np.empty((batch, horizon, n), dtype=np.int64)
    states[:, 0] = s0
    for t in range(horizon):
        s = states[:, t]
        for i in range(n):
            o = s[:, obs[i]] @ w_obs[i]
            u = rng.random(batch)
            a = (cdf_pi[i][o] <= u[:, None]).sum(axis=1)
            r = s[:, nbs[i]] @ w_nb[i]
            u = rng.random(batch)
            actions[:, t, i] = a
            states[:, t + 1, i] = (cdf_P[i][r, a] <= u[:, None]).sum(axis=1)
    return states, actions


def scalar_rollout(
    model: NetworkedMDP,
    policy: LocalizedSoftmaxPolicy,
    batch: int,
    horizon: int,
    rng: np.random.Generator,
    s0: IntArray,
) -> list[list[list[int]]]:
    """The per-agent-step Python loop: for every trajectory, step and agent, one
    ``rng.random()`` for the action and one for the next state, inverse CDF by ``bisect``
    on precomputed Python lists of cumulative sums.  Returns the states as nested lists."""
    n = model.n
    obs = [list(o) for o in policy.observed]
    nbs = [list(nb) for nb in model.neighbourhoods]
    w_obs = [_radix(o, model.n_states).tolist() for o in policy.observed]
    w_nb = [_radix(nb, model.n_states).tolist() for nb in model.neighbourhoods]
    cdf_pi = [np.cumsum(p, axis=-1).tolist() for p in policy.probs]
    cdf_P = [np.cumsum(k, axis=-1).tolist() for k in model.kernels]
    out = []
    for b in range(batch):
        s = [int(x) for x in s0[b]]
        path = [s]
        for _ in range(horizon):
            nxt = [0] * n
            for i in range(n):
                o = sum(s[j] * w for j, w in zip(obs[i], w_obs[i], strict=True))
                row = cdf_pi[i][o]
                a = min(bisect.bisect_right(row, rng.random()), len(row) - 1)
                r = sum(s[j] * w for j, w in zip(nbs[i], w_nb[i], strict=True))
                krow = cdf_P[i][r][a]
                nxt[i] = min(bisect.bisect_right(krow, rng.random()), len(krow) - 1)
            s = nxt
            path.append(s)
        out.append(path)
    return out


def floor_draws(n: int, batch: int, horizon: int, rng: np.random.Generator) -> None:
    """The sampler's uniforms alone: ``H`` draws of ``(2, n, B)`` into one buffer."""
    buf = np.empty((2, n, batch))
    for _ in range(horizon):
        rng.random(out=buf)


# ---------------------------------------------------------------------- timing
def best_rate(routine: Callable[[], object], agent_steps: int, min_seconds: float) -> float:
    """Best of ``REPEATS`` measurements, each repeating ``routine`` for >= ``min_seconds``."""
    start = time.perf_counter()
    routine()  # calibration (untimed in the result)
    once = max(time.perf_counter() - start, 1e-9)
    calls = max(1, math.ceil(min_seconds / once))
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(calls):
            routine()
        best = min(best, (time.perf_counter() - start) / calls)
    return agent_steps / best


@dataclass(frozen=True)
class Row:
    """One ring size.

    Attributes:
        n, batch, horizon: the instance and workload (``agent_steps = batch * horizon * n``).
        sampler_rate, loop_rate, floor_rate: agent-steps per second (best of ``REPEATS``).
        scalar_rate: agent-steps per second of :func:`scalar_rollout` (on ``SCALAR_BATCH``
            trajectories; a rate per agent-step does not depend on the batch).
        sampler_to_loop, sampler_to_scalar, sampler_to_floor, floor_to_loop: ratios.
        setup_seconds: one ``Sampler(model, policy)`` construction.
        seed, spawn_key: the ``SeedSequence`` of the instance.
    """

    n: int
    batch: int
    horizon: int
    agent_steps: int
    sampler_rate: float
    loop_rate: float
    scalar_rate: float
    floor_rate: float
    sampler_to_loop: float
    sampler_to_scalar: float
    sampler_to_floor: float
    floor_to_loop: float
    setup_seconds: float
    seed: int
    spawn_key: tuple[int, ...]


def measure(n: int, batch: int, horizon: int, seed: int, min_seconds: float) -> Row:
    model, policy = ring_instance(n, seed)
    start = time.perf_counter()
    sampler = Sampler(model, policy)
    setup = time.perf_counter() - start
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n, 1)))
    s0 = sampler.sample_initial(batch, rng)
    steps = batch * horizon * n
    sampler_rate = best_rate(lambda: sampler.rollout(batch, horizon, rng), steps, min_seconds)
    loop_rate = best_rate(
        lambda: loop_rollout(model, policy, batch, horizon, rng, s0), steps, min_seconds
    )
    floor_rate = best_rate(lambda: floor_draws(n, batch, horizon, rng), steps, min_seconds)
    scalar_b = min(batch, SCALAR_BATCH)
    scalar_rate = best_rate(
        lambda: scalar_rollout(model, policy, scalar_b, horizon, rng, s0[:scalar_b]),
        scalar_b * horizon * n,
        min_seconds,
    )
    return Row(
        n=n,
        batch=batch,
        horizon=horizon,
        agent_steps=steps,
        sampler_rate=sampler_rate,
        loop_rate=loop_rate,
        scalar_rate=scalar_rate,
        floor_rate=floor_rate,
        sampler_to_loop=sampler_rate / loop_rate,
        sampler_to_scalar=sampler_rate / scalar_rate,
        sampler_to_floor=sampler_rate / floor_rate,
        floor_to_loop=floor_rate / loop_rate,
        setup_seconds=setup,
        seed=seed,
        spawn_key=(n,),
    )


# ---------------------------------------------------------------------- output
_COLUMNS = (
    ("n", 4),
    ("B", 5),
    ("H", 4),
    ("sampler (steps/s)", 17),
    ("loop (steps/s)", 14),
    ("scalar (steps/s)", 16),
    ("floor (steps/s)", 15),
    ("sampler/loop", 12),
    ("sampler/scalar", 14),
    ("sampler/floor", 13),
    ("floor/loop", 10),
    ("setup (s)", 9),
)


def _header() -> str:
    names = "  ".join(f"{name:>{width}}" for name, width in _COLUMNS)
    return names + "\n" + "  ".join("-" * width for _, width in _COLUMNS)


def _format(row: Row) -> str:
    cells = (
        str(row.n),
        str(row.batch),
        str(row.horizon),
        f"{row.sampler_rate:.3g}",
        f"{row.loop_rate:.3g}",
        f"{row.scalar_rate:.3g}",
        f"{row.floor_rate:.3g}",
        f"{row.sampler_to_loop:.3g}x",
        f"{row.sampler_to_scalar:.3g}x",
        f"{row.sampler_to_floor:.3g}",
        f"{row.floor_to_loop:.3g}x",
        f"{row.setup_seconds:.3g}",
    )
    return "  ".join(f"{c:>{width}}" for c, (_, width) in zip(cells, _COLUMNS, strict=True))


def _verdicts(rows: Sequence[Row]) -> list[str]:
    out = []
    for row in rows:
        loop_ok = "met" if row.sampler_to_loop >= SAMPLER_TO_LOOP_TARGET else "MISSED"
        floor_ok = "met" if row.sampler_to_floor >= SAMPLER_TO_FLOOR_TARGET else "MISSED"
        scalar_ok = "met" if row.sampler_to_scalar >= SAMPLER_TO_LOOP_TARGET else "MISSED"
        out.append(
            f"n = {row.n}: sampler/loop {row.sampler_to_loop:.3g}x "
            f"(target >= {SAMPLER_TO_LOOP_TARGET:g}x: {loop_ok}; ceiling floor/loop = "
            f"{row.floor_to_loop:.3g}x), sampler/scalar {row.sampler_to_scalar:.3g}x "
            f"(target >= {SAMPLER_TO_LOOP_TARGET:g}x: {scalar_ok}), "
            f"sampler/floor {row.sampler_to_floor:.3g} "
            f"(target >= {SAMPLER_TO_FLOOR_TARGET:g}: {floor_ok})"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100], help="ring sizes")
    parser.add_argument("--batch", type=int, default=1024, help="trajectories B")
    parser.add_argument("--horizon", type=int, default=50, help="steps H per trajectory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-seconds", type=float, default=0.5, help="minimum duration of one measurement"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead")
    args = parser.parse_args(argv)
    rows = []
    if not args.json:
        print(_header(), flush=True)
    for n in args.n:
        row = measure(n, args.batch, args.horizon, args.seed, args.min_seconds)
        rows.append(row)
        if not args.json:
            print(_format(row), flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print()
        for line in _verdicts(rows):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
