"""pytest plugin: the oracles and conformance checks as fixtures for a user's test suite.

Installed with the package and registered under the ``pytest11`` entry point
``marl-oracle``, so any project that has ``marl-oracle`` installed can write::

    def test_my_occupancy(marl_oracle):
        marl_oracle.check(check_occupancy, my_occupancy)   # fails the test with the report

    def test_my_gradient_on_named_instances(networked_exact):
        mine = my_gradient(networked_exact.model, networked_exact.policy.theta)
        networked_exact.assert_matches("gradient", mine)

Fixtures
--------
``marl_oracle`` (session)
    A :class:`OracleSession`: the profile, the number of cases and the seed every check
    runs with, :meth:`OracleSession.check`, which runs a check of :mod:`verify.checks` on the
    user's callable and fails the test with the check's report (saving the worst case for
    replay), and :attr:`OracleSession.settings`, Hypothesis settings of the same size for
    the user's own property tests over :mod:`verify.strategies`.
``networked_instance``
    Parametrised over small named networked instances (:data:`NETWORKED`).
``networked_exact``
    A :class:`NetworkedExact` on each of them: a seeded random localized policy
    (observation radius 1) and the exact solution of SPEC section 2 (occupancies, shadow
    rewards and values, ``grad F``); ``assert_matches(quantity, arrays)`` compares a user's
    per-agent arrays with it at the derived tolerance of :func:`verify.files.estimate_tolerance`.
``cooperative_game``
    Parametrised over the named cooperative games (:data:`reference.instances.GAMES`).
``game_exact``
    A :class:`GameExact` on each of them: a seeded random sequential policy, its localized
    Q-functions and advantages (SPEC section 5) and ``J*``; ``assert_matches(arrays)`` for a
    user's ``Q^{0:m}``.

Options
-------
``--marl-oracle-profile {dev,ci,thorough}``
    ``ci`` (the default, or ``MARL_ORACLE_PROFILE``): every check's default number of cases
    and seed 0, so a run repeats exactly.  ``dev``: a fifth of the cases (at least 3) for
    fast feedback; ``thorough``: eight times the cases.  ``dev`` and ``thorough`` draw a
    fresh seed per session, printed in the header so that a failure replays with
    ``--marl-oracle-seed``.
``--marl-oracle-examples N``
    Exactly ``N`` cases for every check and ``N`` examples for :attr:`OracleSession.settings`.
``--marl-oracle-seed S``
    The seed of every check and of the fixtures' random policies.  (The Hypothesis settings
    of :attr:`OracleSession.settings` carry no seed: under ``ci`` they are derandomized,
    otherwise replay a user's ``@given`` test with Hypothesis's own ``--hypothesis-seed``.)

Under ``pytest-xdist`` the controller draws the session seed once and hands it to every
worker, so the seed in the header is the one every worker uses.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:  # the oracles load on first use, not with every pytest run
    from hypothesis import settings

    from reference.cooperative.exact import GameValues
    from reference.cooperative.game import CooperativeMarkovGame
    from reference.cooperative.policy import ConditionalPolicy
    from reference.instances import NetworkedInstance
    from reference.networked.exact import NetworkedSolution
    from reference.networked.model import NetworkedMDP
    from reference.networked.policy import LocalizedSoftmaxPolicy
    from reference.networked.utilities import Utility
    from verify.checks import CheckReport
    from verify.files import EstimateCheck, ExactQuantity, Quantity

NetworkedQuantity = Literal["gradient", "occupancy", "shadow-reward"]

__all__ = [
    "GAME_NAMES",
    "NETWORKED",
    "PROFILES",
    "GameExact",
    "NetworkedExact",
    "OracleSession",
    "Profile",
    "game_exact_for",
    "networked_exact_for",
    "networked_instance_named",
]

ProfileName = Literal["dev", "ci", "thorough"]


@dataclass(frozen=True)
class Profile:
    """How much a session checks.

    Attributes:
        name: ``"dev"``, ``"ci"`` or ``"thorough"``.
        scale: multiplier on each check's default number of cases (at least 3 cases).
        examples: ``max_examples`` of :attr:`OracleSession.settings`.
        derandomize: seed 0 and derandomized Hypothesis settings (a run repeats exactly).
    """

    name: ProfileName
    scale: float
    examples: int
    derandomize: bool


PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", 0.2, 15, derandomize=False),
    "ci": Profile("ci", 1.0, 40, derandomize=True),
    "thorough": Profile("thorough", 8.0, 400, derandomize=False),
}
"""The profiles of ``--marl-oracle-profile``; ``ci`` mirrors the defaults of the checks."""

_MIN_CASES = 3


def _fresh_seed() -> int:
    """A new 32-bit seed from operating-system entropy (``dev`` and ``thorough``)."""
    import numpy as np

    return int(np.random.SeedSequence().generate_state(1)[0])


@dataclass(frozen=True)
class OracleSession:
    """The session's profile, and the way a test runs a conformance check.

    Attributes:
        profile: the :class:`Profile` in force.
        seed: the seed of every check and of the fixtures' random policies.
        examples: ``--marl-oracle-examples`` if given (cases for every check), else ``None``.
        case_dir: returns the directory where the worst case of a failed check is saved
            (``marl-oracle-cases`` in pytest's cache).
    """

    profile: Profile
    seed: int
    examples: int | None
    case_dir: Callable[[], Path] = field(repr=False)

    def cases_for(self, check: Callable[..., CheckReport]) -> int:
        """Cases for ``check``: ``--marl-oracle-examples``, else the check's default number
        of cases times the profile's scale (at least 3)."""
        if self.examples is not None:
            return self.examples
        default = inspect.signature(check).parameters["cases"].default
        return max(_MIN_CASES, math.ceil(self.profile.scale * int(default)))

    def run(
        self, check: Callable[..., CheckReport], fn: Callable[..., Any], **kwargs: Any
    ) -> CheckReport:
        """``check(fn, cases=..., seed=..., **kwargs)`` with the session's cases and seed
        (``kwargs`` may override them); returns the report whatever it says."""
        from reference.errors import ModelError

        if "cases" not in inspect.signature(check).parameters:
            raise ModelError(
                f"check = {getattr(check, '__name__', check)!r} is not a check of "
                "verify.checks (it takes no cases=)"
            )
        kwargs.setdefault("cases", self.cases_for(check))
        kwargs.setdefault("seed", self.seed)
        return check(fn, **kwargs)

    def check(
        self, check: Callable[..., CheckReport], fn: Callable[..., Any], **kwargs: Any
    ) -> CheckReport:
        """:meth:`run`, then fail the test if the check failed.

        Raises:
            CheckFailed: (an ``AssertionError``) with the report, the path of the saved
                worst case and the call that replays it.
        """
        __tracebackhide__ = True  # pytest shows the user's test line, not this frame
        from verify.checks import CheckFailed

        report = self.run(check, fn, **kwargs)
        if not report.passed:
            message = str(report)
            if report.worst_case is not None:
                # one file per test and check: PYTEST_CURRENT_TEST is "nodeid (call)"
                test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
                stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test}-{report.check}-seed{report.seed}")
                path = self.case_dir() / f"{stem.strip('_')[-150:]}.npz"
                report.worst_case.save(path)
                # a replay judges its one case at the radius of a run of the same size
                others = {"cases": report.cases}
                others.update((k, v) for k, v in kwargs.items() if k not in ("seed", "cases"))
                shown = ", ".join(
                    f"{k}={v!r}" if isinstance(v, int | float | str | bool) else f"{k}=<as given>"
                    for k, v in others.items()
                )
                message += (
                    f"\n  worst case saved to {path}; replay it with "
                    f"{getattr(check, '__name__', 'the check')}(fn, "
                    f"replay=verify.checks.Case.load({str(path)!r}), {shown})"
                )
            raise CheckFailed(message)
        return report

    @property
    def settings(self) -> settings:
        """Hypothesis settings sized like the profile, for the user's own ``@given`` tests
        (apply them as a decorator above ``@given``)."""
        from hypothesis import HealthCheck, settings

        sized = settings(
            max_examples=self.examples or self.profile.examples,
            derandomize=self.profile.derandomize,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        # a derandomized run neither reads nor writes the example database
        return settings(sized, database=None) if self.profile.derandomize else sized


# ---------------------------------------------------------------------- named instances
NETWORKED: dict[str, tuple[str, tuple[int, ...]]] = {
    "line-message-3": ("line_message", (3,)),
    "line-message-5": ("line_message", (5,)),
    "wireless-1x3": ("wireless", (1, 3)),
}
"""The instances of the ``networked_instance`` fixture: name -> (constructor in
:mod:`reference.instances`, its arguments); each has at most 512 joint states."""

GAME_NAMES = ("climbing", "rare-stall", "ratio")
"""The games of the ``cooperative_game`` fixture: every key of
:data:`reference.instances.GAMES`."""


def networked_instance_named(name: str) -> NetworkedInstance:
    """The instance ``name`` of :data:`NETWORKED`."""
    import reference.instances
    from reference.errors import ModelError

    if name not in NETWORKED:
        raise ModelError(f"instance = {name!r}, expected one of {sorted(NETWORKED)}")
    constructor, args = NETWORKED[name]
    instance: NetworkedInstance = getattr(reference.instances, constructor)(*args)
    return instance


@dataclass(frozen=True)
class NetworkedExact:
    """A named networked instance at a seeded random policy, with its exact solution.

    Attributes:
        name: the instance's key in :data:`NETWORKED`.
        instance: the instance.
        policy: a localized softmax policy of observation radius 1 with standard normal
            ``theta_i[o_i, a_i]``.
        utilities: the instance's entropy utilities (SPEC section 2).
        solution: :func:`reference.networked.exact.solve` at ``policy``: the occupancies,
            shadow rewards and values, and ``grad F``.
        seed: the seed of ``policy`` (``default_rng(seed)``, the session's seed).
    """

    name: str
    instance: NetworkedInstance
    policy: LocalizedSoftmaxPolicy
    utilities: tuple[Utility, ...]
    solution: NetworkedSolution
    seed: int

    @property
    def model(self) -> NetworkedMDP:
        """The networked MDP."""
        return self.instance.model

    def exact(self, quantity: NetworkedQuantity) -> ExactQuantity:
        """The exact per-agent arrays of ``"gradient"`` (``grad_{theta_i} F``, shape
        ``(|O_i|, |A_i|)``), ``"occupancy"`` (``lam_i``, ``(|S_i|, |A_i|)``, mass
        ``1/(1-gamma)``) or ``"shadow-reward"`` (``r_i = grad f_i(lam_i)``) with the derived
        entrywise tolerance (:func:`verify.files.estimate_tolerance`)."""
        from verify.files import networked_quantity

        return networked_quantity(quantity, self.model, self.utilities, self.solution)

    def assert_matches(
        self, quantity: NetworkedQuantity, arrays: Sequence[Any], atol: float = 0.0
    ) -> EstimateCheck:
        """Assert the user's per-agent ``arrays`` equal :meth:`exact` ``(quantity)`` within
        its tolerance plus ``atol``; the failure names the agent, entry and both values."""
        __tracebackhide__ = True
        return _assert_matches(
            quantity, arrays, self.exact(quantity), atol, f"{self.name}, policy seed {self.seed}"
        )


@dataclass(frozen=True)
class GameExact:
    """A named cooperative game at a seeded random sequential policy.

    Attributes:
        name: the game's key in :data:`reference.instances.GAMES`.
        game: the game.
        policy: conditionals with Dirichlet(1) rows.
        values: :func:`reference.cooperative.exact.evaluate_game` at ``policy``
            (``V``, ``Q``, the localized ``Q^{0:m}``, the local advantages, ``nu``, ``J``).
        J_star: the optimal value by certified value iteration.
        J_star_error: its certified error.
        seed: the seed of ``policy`` (``default_rng(seed)``, the session's seed).
    """

    name: str
    game: CooperativeMarkovGame
    policy: ConditionalPolicy
    values: GameValues
    J_star: float
    J_star_error: float
    seed: int

    def exact(self) -> ExactQuantity:
        """``Q^{0:m}`` for every agent ``m`` (shape ``(|S|, |A^0|, ..., |A^m|)``) with the
        derived entrywise tolerance (:func:`verify.files.estimate_tolerance`)."""
        from verify.files import game_quantity

        return game_quantity(self.game, self.values)

    def assert_matches(self, arrays: Sequence[Any], atol: float = 0.0) -> EstimateCheck:
        """Assert the user's ``Q^{0:m}`` arrays equal :meth:`exact` within its tolerance plus
        ``atol``; the failure names the agent, entry and both values."""
        __tracebackhide__ = True
        return _assert_matches(
            "localized-q", arrays, self.exact(), atol, f"{self.name}, policy seed {self.seed}"
        )


def _assert_matches(
    quantity: Quantity, arrays: Sequence[Any], exact: ExactQuantity, atol: float, where: str
) -> EstimateCheck:
    __tracebackhide__ = True
    import numpy as np

    from verify.files import Estimate, FileFormatError, check_estimate

    try:
        got = check_estimate(
            Estimate(quantity, tuple(np.asarray(a, dtype=np.float64) for a in arrays)),
            exact,
            atol,
        )
    except FileFormatError as exc:  # wrong count or shape: the user's arrays are wrong
        raise AssertionError(f"{quantity} ({where}): {exc}") from None
    if not got.passed:
        index = ", ".join(str(k) for k in got.index)
        raise AssertionError(
            f"{quantity} ({where}): {got.failures} of {got.entries} entries outside the tolerance "
            f"{got.tolerance:.3g} + atol {got.atol:.3g}; worst: agent {got.agent}[{index}] = "
            f"{got.estimate!r}, exact {got.exact!r}, error {got.error:.3g}"
        )
    return got


def networked_exact_for(name: str, seed: int) -> NetworkedExact:
    """The :class:`NetworkedExact` of instance ``name`` with policy seed ``seed``."""
    import numpy as np

    from reference.networked.exact import solve
    from reference.networked.policy import LocalizedSoftmaxPolicy

    inst = networked_instance_named(name)
    policy = LocalizedSoftmaxPolicy.random(inst.model, 1, np.random.default_rng(seed))
    utilities = inst.utilities("entropy")
    return NetworkedExact(
        name, inst, policy, utilities, solve(inst.model, policy, utilities), int(seed)
    )


def game_exact_for(name: str, seed: int) -> GameExact:
    """The :class:`GameExact` of game ``name`` with policy seed ``seed``."""
    import numpy as np

    from reference.cooperative.exact import evaluate_game
    from reference.cooperative.policy import ConditionalPolicy
    from reference.errors import ModelError
    from reference.instances import GAMES

    if name not in GAMES:
        raise ModelError(f"game = {name!r}, expected one of {sorted(GAMES)}")
    game = GAMES[name]()
    rng = np.random.default_rng(seed)
    conds = tuple(
        rng.dirichlet(np.ones(k), size=(game.n_states, *game.action_counts[:m]))
        for m, k in enumerate(game.action_counts)
    )
    policy = ConditionalPolicy(game, conds)
    optimal = game.optimal()
    return GameExact(
        name, game, policy, evaluate_game(game, policy), optimal.J, optimal.error_bound,
        int(seed),
    )


# ---------------------------------------------------------------------- pytest hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("marl-oracle", "marl-oracle conformance checks")
    group.addoption(
        "--marl-oracle-profile",
        choices=sorted(PROFILES),
        default=None,
        help="how much the marl_oracle checks run: dev, ci (default; MARL_ORACLE_PROFILE) "
        "or thorough",
    )
    group.addoption(
        "--marl-oracle-examples",
        type=int,
        default=None,
        metavar="N",
        help="exactly N cases for every check (overrides the profile)",
    )
    group.addoption(
        "--marl-oracle-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of every check and fixture policy (default: 0 for ci, fresh otherwise)",
    )


_SESSION = pytest.StashKey["OracleSession"]()
_WORKER_SEED = "marl_oracle_seed"


def _session(config: pytest.Config) -> OracleSession:
    if _SESSION in config.stash:
        return config.stash[_SESSION]
    name = config.getoption("--marl-oracle-profile") or os.environ.get(
        "MARL_ORACLE_PROFILE", "ci"
    )
    if name not in PROFILES:
        raise pytest.UsageError(
            f"MARL_ORACLE_PROFILE = {name!r}, expected one of {sorted(PROFILES)}"
        )
    profile = PROFILES[name]
    examples = config.getoption("--marl-oracle-examples")
    if examples is not None and examples < 1:
        raise pytest.UsageError(f"--marl-oracle-examples = {examples}, expected at least 1")
    seed = config.getoption("--marl-oracle-seed")
    handed = getattr(config, "workerinput", {}).get(_WORKER_SEED)  # an xdist worker
    if seed is None and handed is not None:
        seed = int(handed)
    elif seed is None:
        seed = 0 if profile.derandomize else _fresh_seed()
    elif seed < 0:
        raise pytest.UsageError(f"--marl-oracle-seed = {seed}, expected an integer >= 0")
    def case_dir() -> Path:
        cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
        if cache is not None:
            return Path(cache.mkdir("marl-oracle-cases"))
        path = Path(str(config.rootpath)) / ".marl-oracle-cases"
        path.mkdir(exist_ok=True)
        return path

    session = OracleSession(profile, int(seed), examples, case_dir)
    config.stash[_SESSION] = session
    return session


def pytest_configure(config: pytest.Config) -> None:
    _session(config)  # bad options are usage errors before any test runs


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """``pytest-xdist``: hand the controller's seed to each worker."""
    node.workerinput[_WORKER_SEED] = _session(node.config).seed


def pytest_report_header(config: pytest.Config) -> str:
    s = _session(config)
    cases = f"{s.examples} cases" if s.examples is not None else f"x{s.profile.scale:g} cases"
    return f"marl-oracle: profile {s.profile.name}, {cases} per check, seed {s.seed}"


@pytest.fixture(scope="session")
def marl_oracle(pytestconfig: pytest.Config) -> OracleSession:
    """The session's :class:`OracleSession` (profile, cases, seed, ``check``)."""
    return _session(pytestconfig)


@pytest.fixture(scope="session", params=sorted(NETWORKED))
def networked_instance(request: pytest.FixtureRequest) -> NetworkedInstance:
    """Each small named networked instance of :data:`NETWORKED`."""
    return networked_instance_named(str(request.param))


@pytest.fixture(scope="session", params=sorted(NETWORKED))
def networked_exact(request: pytest.FixtureRequest, marl_oracle: OracleSession) -> NetworkedExact:
    """Each instance of :data:`NETWORKED` at a seeded random policy, solved exactly."""
    return networked_exact_for(str(request.param), marl_oracle.seed)


@pytest.fixture(scope="session", params=GAME_NAMES)
def cooperative_game(request: pytest.FixtureRequest) -> CooperativeMarkovGame:
    """Each named cooperative game."""
    from reference.instances import GAMES

    game: CooperativeMarkovGame = GAMES[str(request.param)]()
    return game


@pytest.fixture(scope="session", params=GAME_NAMES)
def game_exact(request: pytest.FixtureRequest, marl_oracle: OracleSession) -> GameExact:
    """Each named game at a seeded random sequential policy, evaluated exactly."""
    return game_exact_for(str(request.param), marl_oracle.seed)

