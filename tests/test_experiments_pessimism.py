"""verify.experiments.pessimism_sweep: replay from the recorded seeds, datasets shared across
scales, the per-scale statistics, the validity-sufficient scale, and argument validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from reference.cooperative import (
    run_pessimistic_mappo,
    sample_dataset,
    tabular_critic,
    tabular_validity_coefficient,
)
from reference.errors import ModelError
from reference.instances import rare_stall
from verify.experiments import VALIDITY_DELTA, PessimismSweep, pessimism_sweep
from verify.tolerances import summation_tolerance

GAME = rare_stall(0.9)
FAST: dict[str, Any] = {"coverage": 0.15, "n_samples": 2000, "seeds": 3, "K": 4, "beta": 0.1}


def _sweep(scales: tuple[float, ...], seed: int = 0) -> PessimismSweep:
    return pessimism_sweep(GAME, scales=scales, seed=seed, **FAST)


def test_same_seed_replays_exactly() -> None:
    a, b = _sweep((0.0, 1.0), seed=7), _sweep((0.0, 1.0), seed=7)
    for name in ("J", "event", "mean_J", "ci_half_width", "event_frequency", "validity_scales"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.children == b.children == ((7, (0,)), (7, (1,)), (7, (2,)))
    assert (a.J_star, a.behaviour_J, a.online_J) == (b.J_star, b.behaviour_J, b.online_J)


def test_recorded_children_replay_each_dataset() -> None:
    """Every column is reproduced from its recorded (entropy, spawn_key) alone, for every
    scale: the one dataset of a child is the one every scale used."""
    sweep = _sweep((0.0, 1.0), seed=3)
    g = GAME.gamma
    for j, (entropy, key) in enumerate(sweep.children):
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))
        ds = sample_dataset(GAME, FAST["n_samples"], rng, coverage=FAST["coverage"],
                            safe_actions=sweep.safe_actions)
        for i, scale in enumerate(sweep.scales):
            hist = run_pessimistic_mappo(GAME, ds, FAST["K"], FAST["beta"],
                                         bonus_coefficient=scale / (1 - g))
            assert sweep.J[i, j] == hist.J[-1]
            assert sweep.event[i, j] == hist.event_all
        critic = tabular_critic(GAME, ds, 0.0)
        assert sweep.validity_scales[j] == (
            tabular_validity_coefficient(critic, VALIDITY_DELTA) * (1 - g))


def test_datasets_are_shared_across_scales() -> None:
    sweep = _sweep((1.0, 1.0))
    np.testing.assert_array_equal(sweep.J[0], sweep.J[1])
    np.testing.assert_array_equal(sweep.event[0], sweep.event[1])


def test_statistics_per_scale() -> None:
    sweep = _sweep((0.0, 0.5))
    H = 1 / (1 - GAME.gamma)
    assert sweep.J.shape == sweep.event.shape == (2, 3)
    assert sweep.safe_actions.tolist() == [0, 0]  # rare_stall: the safe joint action is 0
    np.testing.assert_allclose(sweep.mean_J, sweep.J.mean(axis=1), rtol=0,
                               atol=summation_tolerance(3, H))
    half = stats.t.ppf(0.975, 2) * sweep.J.std(axis=1, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(sweep.ci_half_width, half, rtol=0,
                               atol=summation_tolerance(3, H))
    np.testing.assert_array_equal(sweep.event_frequency, sweep.event.mean(axis=1))
    assert sweep.validity_scale == pytest.approx(sweep.validity_scales.mean(), rel=1e-15)
    assert not sweep.J.flags.writeable and not sweep.event.flags.writeable


def test_validity_sufficient_scale_gives_the_event() -> None:
    """With each dataset's bonus at or above its validity-sufficient scale the event holds at
    every V in [0, H]^S, hence at every Vhat_k, with probability >= 1 - 1e-9 per dataset
    (tabular_validity_coefficient): this check fails with probability <= 3e-9."""
    first = _sweep((0.0,), seed=11)
    again = _sweep((float(first.validity_scales.max()),), seed=11)
    np.testing.assert_array_equal(again.validity_scales, first.validity_scales)
    assert again.event_frequency.tolist() == [1.0]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"scales": (-1.0,)}, "scales[0] = -1.0"),
        ({"scales": (0.0, float("nan"))}, "scales[1] = nan"),
        ({"scales": (float("inf"),)}, "scales[0] = inf"),
        ({"scales": ()}, "scales = ()"),
        ({"coverage": 1.5}, "coverage = 1.5"),
        ({"coverage": -0.1}, "coverage = -0.1"),
        ({"n_samples": 0}, "n_samples = 0"),
        ({"seeds": 1}, "seeds = 1"),
        ({"K": 0}, "K = 0"),
        ({"beta": 0.0}, "beta = 0.0"),
        ({"beta": float("nan")}, "beta = nan"),
        ({"lambda_reg": 0.0}, "lambda_reg = 0.0"),
        ({"seed": -1}, "seed = -1"),
    ],
)
def test_bad_arguments_name_the_argument(override: dict[str, Any], fragment: str) -> None:
    kwargs: dict[str, Any] = {**FAST, "scales": (0.0,), **override}
    with pytest.raises(ModelError) as exc:
        pessimism_sweep(GAME, **kwargs)
    assert fragment in str(exc.value)
