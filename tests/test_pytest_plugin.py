"""The pytest plugin (verify/pytest_plugin.py), run the way a user's suite runs it: a test file
in a fresh directory, collected by a nested pytest session that loads the plugin through its
``pytest11`` entry point.  Correct implementations pass, planted bugs fail with the check's
report and a saved worst case that replays, and the options set the number of cases and
the seed."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from reference.errors import ModelError
from reference.instances import GAMES
from reference.networked.policy import LocalizedSoftmaxPolicy
from verify.checks import Case, check_gae, check_occupancy, check_policy_gradient_estimator
from verify.pytest_plugin import (
    GAME_NAMES,
    NETWORKED,
    PROFILES,
    OracleSession,
    game_exact_for,
    networked_exact_for,
    networked_instance_named,
)

USER_TESTS = '''
import numpy as np
import pytest
from hypothesis import given
from verify import strategies as mst
from verify.checks import check_occupancy


def occupancy(P, rho, gamma, pi):
    P_pi = np.einsum("sa,sat->st", pi, P)
    lam_S = np.linalg.solve(np.eye(len(rho)) - gamma * P_pi.T, rho)
    return lam_S[:, None] * pi


def occupancy_missing_normalisation(P, rho, gamma, pi):
    return (1 - gamma) * occupancy(P, rho, gamma, pi)   # d, where lam is asked for


def test_correct_occupancy(marl_oracle):
    report = marl_oracle.check(check_occupancy, occupancy)
    assert report.passed and report.cases == {cases} and report.seed == marl_oracle.seed


def test_buggy_occupancy(marl_oracle):
    marl_oracle.check(check_occupancy, occupancy_missing_normalisation)


def test_gradient(networked_exact, marl_oracle):
    assert networked_exact.seed == marl_oracle.seed
    networked_exact.assert_matches("gradient", [g.copy() for g in networked_exact.solution.gradient])
    networked_exact.assert_matches("occupancy", networked_exact.solution.local_occupancy)


def test_localized_q(game_exact):
    game_exact.assert_matches(game_exact.values.localized)
    assert game_exact.values.J <= game_exact.J_star + game_exact.J_star_error


def test_own_property(marl_oracle):
    seen = []

    @marl_oracle.settings
    @given(mst.tabular_problems())
    def inner(problem):
        seen.append(problem)

    inner()
    assert len(seen) <= {examples}
'''


def _write(pytester: pytest.Pytester, cases: int, examples: int) -> None:
    pytester.makepyfile(test_user=USER_TESTS.format(cases=cases, examples=examples))


def test_the_plugin_is_registered_under_pytest11() -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "marl-oracle"]
    assert len(found) == 1 and found[0].value == "verify.pytest_plugin"


def test_a_user_suite_on_the_ci_profile(pytester: pytest.Pytester) -> None:
    """Default profile ``ci``: each check's default cases (50 for the occupancy check) at
    seed 0; one planted bug fails with the report and a saved worst case; every named
    instance and game is a parameter of the exact fixtures."""
    _write(pytester, cases=50, examples=PROFILES["ci"].examples)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2 + len(NETWORKED) + len(GAME_NAMES), failed=1)
    out = result.stdout.str()
    assert "marl-oracle: profile ci, x1 cases per check, seed 0" in out
    assert "check_occupancy: FAILED" in out or "occupancy: FAILED" in out
    saved = re.search(r"worst case saved to (\S+\.npz); replay it with check_occupancy\(fn, "
                      r"replay=verify\.checks\.Case\.load\('\S+'\), cases=50\)", out)
    assert saved is not None, out
    assert "test_buggy_occupancy" in Path(saved.group(1)).name
    case = Case.load(saved.group(1))
    assert case.seed == 0 and case.check == "occupancy"

    def buggy(P: np.ndarray, rho: np.ndarray, gamma: float, pi: np.ndarray) -> np.ndarray:
        P_pi = np.einsum("sa,sat->st", pi, P)
        lam_S = np.linalg.solve(np.eye(len(rho)) - gamma * P_pi.T, rho)
        return (1 - gamma) * lam_S[:, None] * pi

    replayed = check_occupancy(buggy, replay=case)
    assert not replayed.passed and replayed.cases == 1


def test_the_readme_example_suite_passes(pytester: pytest.Pytester) -> None:
    """The README's example of a user's test file, run as one: every test passes on every
    named instance and game."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Your test suite: the pytest plugin", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    pytester.makepyfile(test_my_marl=block.group(1))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2 + len(GAME_NAMES) + len(NETWORKED))


def test_examples_and_seed_options(pytester: pytest.Pytester) -> None:
    _write(pytester, cases=7, examples=7)
    result = pytester.runpytest("--marl-oracle-examples", "7", "--marl-oracle-seed", "5",
                                "-k", "correct or own_property")
    result.assert_outcomes(passed=2)
    assert "marl-oracle: profile ci, 7 cases per check, seed 5" in result.stdout.str()


def test_dev_profile_draws_a_fresh_printed_seed(pytester: pytest.Pytester) -> None:
    _write(pytester, cases=10, examples=PROFILES["dev"].examples)
    result = pytester.runpytest("--marl-oracle-profile", "dev", "-k", "correct")
    result.assert_outcomes(passed=1)
    header = re.search(r"marl-oracle: profile dev, x0.2 cases per check, seed (\d+)",
                       result.stdout.str())
    assert header is not None


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--marl-oracle-examples", "0"], None, "--marl-oracle-examples = 0"),
        (["--marl-oracle-seed", "-2"], None, "--marl-oracle-seed = -2"),
        ([], "bogus", "MARL_ORACLE_PROFILE = 'bogus'"),
        (["--marl-oracle-profile", "bogus"], None, "invalid choice: 'bogus'"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str],
    env: str | None, fragment: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("MARL_ORACLE_PROFILE", env)
    _write(pytester, cases=50, examples=40)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment in result.stderr.str()


def _session(profile: str, examples: int | None = None) -> OracleSession:
    return OracleSession(PROFILES[profile], 0, examples, lambda: Path("."))


def test_cases_per_profile() -> None:
    """ci keeps each check's default; dev a fifth (at least 3); thorough eight times; an
    explicit number of examples wins."""
    for check, default in ((check_occupancy, 50), (check_gae, 50),
                           (check_policy_gradient_estimator, 10)):
        assert _session("ci").cases_for(check) == default
        assert _session("dev").cases_for(check) == max(3, -(-default // 5))
        assert _session("thorough").cases_for(check) == 8 * default
        assert _session("thorough", 4).cases_for(check) == 4
    assert _session("ci").settings.derandomize and _session("ci").settings.database is None
    assert _session("ci").settings.max_examples == PROFILES["ci"].examples
    assert not _session("dev").settings.derandomize
    assert _session("dev", 9).settings.max_examples == 9


def test_run_refuses_a_callable_that_is_not_a_check() -> None:
    with pytest.raises(ModelError, match="not a check"):
        _session("ci").run(lambda fn: None, lambda: None)


def test_fixture_instances_are_the_named_ones() -> None:
    assert tuple(sorted(GAMES)) == GAME_NAMES
    for name in NETWORKED:
        assert networked_instance_named(name).model.states.size <= 512
    with pytest.raises(ModelError, match="instance = 'nowhere'"):
        networked_instance_named("nowhere")
    with pytest.raises(ModelError, match="game = 'nowhere'"):
        game_exact_for("nowhere", 0)
    ex = networked_exact_for("line-message-3", seed=7)
    with pytest.raises(ModelError, match="quantity = 'gradeint'"):
        ex.exact("gradeint")  # type: ignore[arg-type]


def test_fixture_policies_follow_the_seed() -> None:
    """The exact fixtures' policies are drawn from ``default_rng(seed)``: theta of
    ``LocalizedSoftmaxPolicy.random(model, 1, ...)``, Dirichlet(1) conditionals."""
    ex = networked_exact_for("line-message-3", seed=7)
    want = LocalizedSoftmaxPolicy.random(ex.model, 1, np.random.default_rng(7))
    for a, b in zip(ex.policy.theta, want.theta, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ex.seed == 7
    other = networked_exact_for("line-message-3", seed=8)
    assert not np.array_equal(other.policy.theta[0], ex.policy.theta[0])
    game = game_exact_for("climbing", seed=7)
    rng = np.random.default_rng(7)
    first = rng.dirichlet(np.ones(game.game.action_counts[0]), size=(game.game.n_states,))
    np.testing.assert_array_equal(game.policy.conditionals[0], first)


def test_exact_fixtures_assert_with_named_entries() -> None:
    """An array off by more than the derived tolerance fails with the agent and entry named;
    within it, or within an extra ``atol``, it passes; wrong counts and shapes fail."""
    ex = networked_exact_for("line-message-3", seed=1)
    exact = ex.exact("gradient")
    good = [g.copy() for g in ex.solution.gradient]
    assert ex.assert_matches("gradient", good).passed
    bad = [g.copy() for g in good]
    bad[1][0, 1] += 10 * exact.tolerance
    with pytest.raises(AssertionError, match=r"policy seed 1\): 1 of \d+ entries .* agent 1\[0, 1\]"):
        ex.assert_matches("gradient", bad)
    ex.assert_matches("gradient", bad, atol=20 * exact.tolerance)
    with pytest.raises(AssertionError, match="2 arrays, expected one per agent"):
        ex.assert_matches("gradient", good[:2])
    with pytest.raises(AssertionError, match="has shape"):
        ex.assert_matches("occupancy", [o[:, :1] for o in ex.solution.local_occupancy])
    ex.assert_matches("shadow-reward", ex.solution.shadow_rewards)

    game = game_exact_for("climbing", seed=2)
    q = [x.copy() for x in game.values.localized]
    game.assert_matches(q)
    q[-1][0, 1, 2] -= 1e-6
    with pytest.raises(AssertionError, match=r"localized-q \(climbing, policy seed 2\): 1 of .* agent 1\[0, 1, 2\]"):
        game.assert_matches(q)
    assert game.J_star >= game.values.J - game.J_star_error
