"""Time one exact ``grad F`` on small instances: the library's default call against jitted JAX.

What is measured
----------------
For every ``n`` the instance is ``line-message`` (SPEC section 7, binary agents on a line,
``gamma = 0.9``, linear utilities) with a random localized softmax policy of observation
radius 1 (``theta`` standard normal from ``default_rng(SeedSequence(seed, spawn_key=(n,)))``).

* **library**: one call of :func:`reference.networked.solve` with the default backend
  (``"auto"``), from the policy object to ``grad F`` (the call also returns the objective,
  occupancies and values, with their certificates).
* **from theta**: the library from the parameters, ``solve(model, policy.with_theta(theta),
  ...)``: the policy's construction (validation and softmax of every agent) included, the
  same scope as the JAX call below.
* **jax**: the route a researcher would write: ``jax.grad`` of ``F(theta)`` through a dense
  solve, jitted, ``float64``.  ``pi_i = softmax(theta_i)``; the policy-averaged local factors
  ``M_i(s, s'_i) = sum_{a_i} pi_i(a_i | o_i(s)) P_i(s'_i | s_{N_i}, a_i)``; ``P_pi`` as their
  row-wise Kronecker product; ``lam_S = solve(I - gamma P_pi^T, rho)``;
  ``lam_i(s_i, a_i) = sum_s lam_S(s) 1[s_i] pi_i(a_i | o_i(s))``; ``F = mean_i <r_i, lam_i>``.
  Compile time is excluded (one call before timing); XLA runs on one thread.

Both are the best of ``--rounds`` blocks of ``--repeats`` calls in the same process
(``OPENBLAS_NUM_THREADS=1``), the library's and JAX's blocks alternating, so that both see the
same load on a shared machine; the best time is the one to read.  ``lib / jax`` is the ratio
of the two best times (below 1: the library is faster), ``theta / jax`` the same for the
call from the parameters (timed in the library's blocks).  ``max |diff|`` compares the
gradients.  The JAX route forms the dense ``|S| x |S|`` matrix, so it runs only while
``n <= --jax-max``; where its first call (compile and one run) took ``t`` seconds it is timed
``max(1, min(repeats, --jax-budget / t))`` times in a single block.

Run from the repository root (``pip install '.[test]'`` provides JAX)::

    python bench/small_instances.py [--n-min 4] [--n-max 14] [--jax-max 12] [--repeats 5]
                                    [--rounds 3] [--jax-budget 60]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from reference.instances import line_message
from reference.networked import LocalizedSoftmaxPolicy, solve


def _best(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    return best, out


def _jax_gradient(model: Any, policy: LocalizedSoftmaxPolicy, rewards: list[Any]) -> Any:
    """The jitted ``grad F`` of the module docstring, closed over the model's constants."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    n, nS = model.n, model.states.size
    digits = model.states.digits
    obs_index = [jnp.asarray(policy.observation_index(i)) for i in range(n)]
    hood_index = [jnp.asarray(model.neighbourhood_index(i)) for i in range(n)]
    kernels = [jnp.asarray(k) for k in model.kernels]
    own = [jnp.asarray(digits[:, i]) for i in range(n)]
    rho = jnp.asarray(model.joint_rho())
    r = [jnp.asarray(x) for x in rewards]
    gamma = model.gamma

    def objective(theta: list[Any]) -> Any:
        probs = [jax.nn.softmax(t, axis=1) for t in theta]
        p_pi = jnp.ones((nS, 1))
        for i in range(n):
            pi_s = probs[i][obs_index[i]]                       # (|S|, |A_i|)
            k_s = kernels[i][hood_index[i]]                     # (|S|, |A_i|, |S_i|)
            m_i = jnp.einsum("sa,sax->sx", pi_s, k_s)           # (|S|, |S_i|)
            p_pi = (p_pi[:, :, None] * m_i[:, None, :]).reshape(nS, -1)
        lam = jnp.linalg.solve(jnp.eye(nS) - gamma * p_pi.T, rho)
        total = 0.0
        for i in range(n):
            weighted = lam[:, None] * probs[i][obs_index[i]]    # (|S|, |A_i|)
            lam_i = jax.ops.segment_sum(weighted, own[i], num_segments=model.n_states[i])
            total = total + jnp.sum(r[i] * lam_i)
        return total / n

    return jax.jit(jax.grad(objective))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-min", type=int, default=4)
    parser.add_argument("--n-max", type=int, default=14)
    parser.add_argument("--jax-max", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jax-budget", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    print(f"{'n':>3} {'|S|':>6} {'backend':>12} {'library ms':>11} {'from theta':>11} "
          f"{'jax ms':>9} {'lib / jax':>9} {'theta / jax':>11} {'max |diff|':>11}", flush=True)
    for n in range(args.n_min, args.n_max + 1):
        inst = line_message(n)
        model = inst.model
        rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(n,)))
        policy = LocalizedSoftmaxPolicy.random(model, 1, rng)
        utils = inst.utilities()

        def library(m: Any = model, p: Any = policy, u: Any = utils) -> Any:
            return solve(m, p, u)

        theta = [np.asarray(t) for t in policy.theta]

        def from_theta(m: Any = model, p: Any = policy, u: Any = utils, t: Any = theta) -> Any:
            return solve(m, p.with_theta(t), u)

        lib_s, sol = _best(library, args.repeats)
        theta_s = _best(from_theta, args.repeats)[0]
        row: dict[str, Any] = {"n": n, "joint_states": model.states.size,
                               "backend": sol.backend}
        if n <= args.jax_max:
            rewards = [np.asarray(u.gradient(np.zeros(u.shape))) for u in utils]
            grad = _jax_gradient(model, policy, rewards)
            import jax

            first, _ = _best(lambda f=grad, t=theta: jax.block_until_ready(f(t)), 1)  # compile
            jax_repeats = max(1, min(args.repeats, int(args.jax_budget / first)))
            rounds = args.rounds if jax_repeats == args.repeats else 1
            jax_s = float("inf")
            for _ in range(rounds):
                block, g = _best(
                    lambda f=grad, t=theta: jax.block_until_ready(f(t)), jax_repeats
                )
                jax_s = min(jax_s, block)
                if rounds > 1:
                    lib_s = min(lib_s, _best(library, args.repeats)[0])
                    theta_s = min(theta_s, _best(from_theta, args.repeats)[0])
            row.update(jax_repeats=jax_repeats)
            diff = max(float(np.max(np.abs(np.asarray(a) - b)))
                       for a, b in zip(g, sol.gradient, strict=True))
            row.update(jax_s=jax_s, ratio=lib_s / jax_s, theta_ratio=theta_s / jax_s,
                       max_diff=diff)
            tail = (f"{jax_s * 1e3:>9.3f} {lib_s / jax_s:>9.2f} {theta_s / jax_s:>11.2f} "
                    f"{diff:>11.1e}")
        else:
            for _ in range(args.rounds - 1):
                lib_s = min(lib_s, _best(library, args.repeats)[0])
                theta_s = min(theta_s, _best(from_theta, args.repeats)[0])
            tail = f"{'-':>9} {'-':>9} {'-':>11} {'-':>11}"
        row.update(library_s=lib_s, from_theta_s=theta_s)
        rows.append(row)
        print(f"{n:>3} {model.states.size:>6} {sol.backend:>12} {lib_s * 1e3:>11.3f} "
              f"{theta_s * 1e3:>11.3f} {tail}", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
