"""Offline data for pessimistic MA-PPO (SPEC section 6): a dataset of transitions
``(s, a, r, s')`` of a cooperative game, the behaviour policies that draw it, and its
``.npz`` file format.

The draw is i.i.d.: ``s ~ mu`` (by default the behaviour policy's normalised visitation
``nu_b``), ``a ~ b(.|s)``, ``r ~ Bernoulli(r(s, a))`` or ``r = r(s, a)``, ``s' ~ P(.|s, a)``.
Given the state-action pairs, the pairs ``(r_i, s'_i)`` are independent with the true
conditional laws; the validity event of ``proofs_notes/pessimism.md#event`` is derived
under exactly this conditional independence.

Behaviour with coverage ``C``: ``b(a|s) = C / |A| + (1 - C) 1[a = a_safe(s)]``, so every joint
action has probability at least ``C / |A|`` (full coverage at ``C = 1``) and the safe action
keeps the rest.

File format (schema ``marl-oracle/offline-dataset``, version :data:`SCHEMA_VERSION`): one
uncompressed ``.npz`` written with :func:`numpy.savez` and read with ``allow_pickle=False``,
holding exactly the fields of :data:`FILE_FIELDS`.  :meth:`OfflineDataset.load` reads every
field, checks the schema, the version, the dtypes and the shapes, and builds the dataset
(which validates every entry) before returning: a file that fails any check raises
:class:`~reference.errors.DatasetError` naming the file and the field, and nothing is
returned.  :meth:`OfflineDataset.save` writes to a temporary file in the target directory
and renames it, so an interrupted save never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from reference._arrays import (
    FloatArray,
    FrozenArrays,
    IntArray,
    as_float_array,
    check_distribution_rows,
    check_rng,
    draw_rows,
    frozen,
)
from reference._io import atomic_savez, npz_signature_problem
from reference.cooperative.game import CooperativeMarkovGame
from reference.errors import DatasetError
from reference.tabular import occupancy

__all__ = [
    "FILE_FIELDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "OfflineDataset",
    "behaviour_policy",
    "game_digest",
    "sample_dataset",
]

SCHEMA = "marl-oracle/offline-dataset"
"""The ``schema`` field of every dataset file."""

SCHEMA_VERSION = 1
"""The file format version this library writes and reads."""

FILE_FIELDS = (
    "schema",
    "schema_version",
    "n_states",
    "action_counts",
    "states",
    "actions",
    "rewards",
    "next_states",
    "game_digest",
    "description",
)
"""The fields of a dataset file, no more and no fewer."""

RewardModel = Literal["bernoulli", "fixed"]


def game_digest(game: CooperativeMarkovGame) -> str:
    """SHA-256 of the game's dynamics: the shapes and float64 bytes of ``P`` and ``r``.

    ``rho`` and ``gamma`` are left out: a dataset of transitions does not depend on them
    (the state distribution of a draw is recorded in the dataset's description)."""
    h = hashlib.sha256()
    h.update(repr((game.P.shape, game.r.shape)).encode())
    h.update(np.ascontiguousarray(game.P, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(game.r, dtype="<f8").tobytes())
    return h.hexdigest()


def _index_array(value: Any, name: str, ndim: int) -> IntArray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise DatasetError(f"{name} has dtype {arr.dtype}, expected an integer array")
    if arr.ndim != ndim:
        raise DatasetError(f"{name} has {arr.ndim} dimensions {arr.shape}, expected {ndim}")
    out = np.array(arr, dtype=np.int64, copy=True)
    out.setflags(write=False)
    return out


def _check_range(arr: IntArray, upper: int, name: str) -> None:
    bad = (arr < 0) | (arr >= upper)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise DatasetError(
            f"{name}[{i}] = {int(arr.reshape(-1)[i])}, expected an index in [0, {upper})"
        )


@dataclass(frozen=True, eq=False)
class OfflineDataset(FrozenArrays):
    """``n`` transitions ``(s_i, a_i, r_i, s'_i)`` of a cooperative game (SPEC section 6).

    Attributes:
        states: ``(n,)`` ``s_i``, indices in ``[0, n_states)``.
        actions: ``(n, N)`` joint actions, ``actions[i, m]`` in ``[0, action_counts[m])``.
        rewards: ``(n,)`` ``r_i`` in ``[0, 1]`` (SPEC section 5's reward range).
        next_states: ``(n,)`` ``s'_i``.
        n_states: ``|S|``.
        action_counts: ``(|A^0|, ..., |A^{N-1}|)``.
        game_digest: :func:`game_digest` of the game that drew the data, ``""`` if unknown
            (data from elsewhere).
        description: how the data were drawn (behaviour, coverage, seed), for reports.
    """

    states: IntArray
    actions: IntArray
    rewards: FloatArray
    next_states: IntArray
    n_states: int
    action_counts: tuple[int, ...]
    game_digest: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        n_s = self.n_states
        if isinstance(n_s, bool) or not isinstance(n_s, int | np.integer) or n_s < 1:
            raise DatasetError(f"n_states = {n_s!r}, expected a positive integer")
        counts = tuple(self.action_counts)
        if not counts or any(
            isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in counts
        ):
            raise DatasetError(
                f"action_counts = {self.action_counts!r}, expected positive integers"
            )
        counts = tuple(int(k) for k in counts)
        states = _index_array(self.states, "states", 1)
        n = states.shape[0]
        if n < 1:
            raise DatasetError("states is empty, expected at least one transition")
        actions = _index_array(self.actions, "actions", 2)
        if actions.shape != (n, len(counts)):
            raise DatasetError(
                f"actions has shape {actions.shape}, expected ({n}, {len(counts)}): "
                "one joint action per transition"
            )
        next_states = _index_array(self.next_states, "next_states", 1)
        if next_states.shape != (n,):
            raise DatasetError(f"next_states has shape {next_states.shape}, expected ({n},)")
        rewards = as_float_array(self.rewards, "rewards", shape=(n,), error=DatasetError)
        _check_range(states, int(n_s), "states")
        _check_range(next_states, int(n_s), "next_states")
        for m, k in enumerate(counts):
            bad = (actions[:, m] < 0) | (actions[:, m] >= k)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DatasetError(
                    f"actions[{i}, {m}] = {int(actions[i, m])}, expected an action of agent "
                    f"{m} in [0, {k})"
                )
        out = (rewards < 0) | (rewards > 1)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DatasetError(f"rewards[{i}] = {float(rewards[i])!r}, expected a reward in [0, 1]")
        if not isinstance(self.game_digest, str) or not isinstance(self.description, str):
            raise DatasetError("game_digest and description must be strings")
        object.__setattr__(self, "n_states", int(n_s))
        object.__setattr__(self, "action_counts", counts)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "next_states", next_states)
        object.__setattr__(self, "rewards", frozen(rewards))

    @property
    def n_samples(self) -> int:
        """Number of transitions ``n``."""
        return int(self.states.shape[0])

    @property
    def n_joint_actions(self) -> int:
        """``|A| = prod_m |A^m|``."""
        return math.prod(self.action_counts)

    @property
    def joint_actions(self) -> IntArray:
        """``(n,)`` the joint actions flattened in mixed radix, agent 0 most significant
        (the convention of :mod:`reference.cooperative.game`)."""
        flat = np.ravel_multi_index(tuple(self.actions.T), self.action_counts)
        out: IntArray = np.asarray(flat, dtype=np.int64)
        return out

    def check_game(self, game: CooperativeMarkovGame) -> None:
        """Raise :class:`DatasetError` unless this dataset fits ``game``: the same number of
        states and per-agent action counts, and, when the dataset records the digest of the
        game that drew it, the same dynamics."""
        if game.n_states != self.n_states or game.action_counts != self.action_counts:
            raise DatasetError(
                f"dataset has n_states = {self.n_states}, action_counts = {self.action_counts}; "
                f"game {game.name!r} has n_states = {game.n_states}, "
                f"action_counts = {game.action_counts}"
            )
        if self.game_digest and self.game_digest != game_digest(game):
            raise DatasetError(
                f"dataset was drawn from a game with digest {self.game_digest[:12]}..., "
                f"game {game.name!r} has digest {game_digest(game)[:12]}... "
                "(different P or r)"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the dataset to ``path`` (exactly that name) in the format of this module's
        docstring, atomically (temporary file in the same directory, then rename), with the
        user's umask; a missing or unwritable directory raises
        :class:`~reference.errors.OutputError` naming ``path``."""
        fields: dict[str, npt.NDArray[Any]] = {
            "schema": np.array(SCHEMA),
            "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
            "n_states": np.array(self.n_states, dtype=np.int64),
            "action_counts": np.array(self.action_counts, dtype=np.int64),
            "states": self.states,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_states": self.next_states,
            "game_digest": np.array(self.game_digest),
            "description": np.array(self.description),
        }
        atomic_savez(path, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OfflineDataset:
        """Read a dataset written by :meth:`save`; see the module docstring for the checks.

        Raises:
            DatasetError: naming ``path`` and the field, for an unreadable or corrupted
                file, a wrong schema or version, a missing or unexpected field, a wrong
                dtype or shape, or an entry out of range.
        """
        where = os.fspath(path)
        problem = npz_signature_problem(where)
        if problem is not None:
            raise DatasetError(f"{where}: not a readable dataset file: it {problem}")
        try:
            with np.load(where, allow_pickle=False) as archive:
                names = set(archive.files)
                missing = [f for f in FILE_FIELDS if f not in names]
                extra = sorted(names - set(FILE_FIELDS))
                if missing or extra:
                    raise DatasetError(
                        f"{where}: missing fields {missing}, unexpected fields {extra}; "
                        f"a {SCHEMA} file holds exactly {list(FILE_FIELDS)}"
                    )
                raw = {f: archive[f] for f in FILE_FIELDS}
        except DatasetError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DatasetError(f"{where}: not a readable dataset file ({exc})") from exc
        if not isinstance(raw["schema"], np.ndarray) or raw["schema"].dtype.kind != "U":
            raise DatasetError(f"{where}: field 'schema' is not a string")
        if str(raw["schema"]) != SCHEMA:
            raise DatasetError(
                f"{where}: schema = {str(raw['schema'])!r}, expected {SCHEMA!r}"
            )
        version = raw["schema_version"]
        if version.shape != () or version.dtype.kind not in "iu":
            raise DatasetError(f"{where}: field 'schema_version' is not an integer scalar")
        if int(version) != SCHEMA_VERSION:
            newer = " (written by a newer marl-oracle)" if int(version) > SCHEMA_VERSION else ""
            raise DatasetError(
                f"{where}: schema_version = {int(version)}{newer}, this library reads "
                f"version {SCHEMA_VERSION}"
            )
        for name in ("game_digest", "description"):
            if raw[name].shape != () or raw[name].dtype.kind != "U":
                raise DatasetError(f"{where}: field {name!r} is not a string scalar")
        n_states = raw["n_states"]
        if n_states.shape != () or n_states.dtype.kind not in "iu":
            raise DatasetError(f"{where}: field 'n_states' is not an integer scalar")
        counts = raw["action_counts"]
        if counts.ndim != 1 or counts.dtype.kind not in "iu":
            raise DatasetError(f"{where}: field 'action_counts' is not an integer vector")
        if raw["rewards"].dtype.kind != "f":
            raise DatasetError(
                f"{where}: field 'rewards' has dtype {raw['rewards'].dtype}, expected float"
            )
        try:
            return cls(
                states=raw["states"],
                actions=raw["actions"],
                rewards=raw["rewards"],
                next_states=raw["next_states"],
                n_states=int(n_states),
                action_counts=tuple(int(k) for k in counts),
                game_digest=str(raw["game_digest"]),
                description=str(raw["description"]),
            )
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None


def behaviour_policy(
    game: CooperativeMarkovGame,
    coverage: float,
    safe_actions: npt.ArrayLike | None = None,
) -> FloatArray:
    """``(nS, |A|)`` joint behaviour ``b(a|s) = C/|A| + (1 - C) 1[a = a_safe(s)]``.

    Args:
        coverage: ``C`` in ``[0, 1]``; every joint action gets at least ``C / |A|``.
        safe_actions: ``(nS,)`` flat joint action ``a_safe(s)`` per state (mixed radix, agent
            0 most significant); required when ``C < 1``.
    """
    c = float(coverage)
    if not 0.0 <= c <= 1.0:
        raise DatasetError(f"coverage = {coverage!r}, expected a probability in [0, 1]")
    n_s, n_a = game.n_states, game.n_joint_actions
    b = np.full((n_s, n_a), c / n_a)
    if c < 1.0:
        if safe_actions is None:
            raise DatasetError(f"coverage = {c!r} < 1 needs safe_actions, one per state")
        safe = np.asarray(safe_actions)
        if safe.shape != (n_s,) or safe.dtype.kind not in "iu":
            raise DatasetError(
                f"safe_actions has shape {safe.shape} and dtype {safe.dtype}, expected "
                f"({n_s},) integers"
            )
        _check_range(safe.astype(np.int64), n_a, "safe_actions")
        b[np.arange(n_s), safe] += 1.0 - c
    return frozen(b)


def sample_dataset(
    game: CooperativeMarkovGame,
    n_samples: int,
    rng: np.random.Generator,
    *,
    coverage: float = 1.0,
    safe_actions: npt.ArrayLike | None = None,
    rewards: RewardModel = "bernoulli",
    state_distribution: npt.ArrayLike | None = None,
) -> OfflineDataset:
    """``n_samples`` i.i.d. transitions of ``game`` under :func:`behaviour_policy`, all
    drawn at once (module docstring).

    Args:
        rewards: ``"bernoulli"`` draws ``r_i ~ Bernoulli(r(s_i, a_i))``; ``"fixed"`` records
            ``r(s_i, a_i)``.
        state_distribution: ``(nS,)`` law ``mu`` of ``s_i``; default the behaviour policy's
            normalised visitation ``nu_b = (1 - gamma) lam_S`` from ``rho`` (exact).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise DatasetError(f"n_samples = {n_samples!r}, expected a positive integer")
    if n_samples < 1:
        raise DatasetError(f"n_samples = {n_samples!r}, expected a positive integer")
    if rewards not in ("bernoulli", "fixed"):
        raise DatasetError(f"rewards = {rewards!r}, expected 'bernoulli' or 'fixed'")
    rng = check_rng(rng, error=DatasetError)
    b = behaviour_policy(game, coverage, safe_actions)
    n_s, n_a = game.n_states, game.n_joint_actions
    if state_distribution is None:
        mu = (1 - game.gamma) * occupancy(game.tabular, b).lam_S
        where = "nu_b"
    else:
        mu = as_float_array(state_distribution, "state_distribution", shape=(n_s,),
                            error=DatasetError)
        check_distribution_rows(mu[None, :], "state_distribution", error=DatasetError)
        where = "given mu"
    n = int(n_samples)
    s = draw_rows(np.cumsum(mu)[None, :], np.zeros(n, dtype=np.int64), rng)
    a = draw_rows(np.cumsum(b, axis=1), s, rng)
    cell = s * n_a + a
    P_cum = np.cumsum(game.tabular.P.reshape(n_s * n_a, n_s), axis=1)
    s_next = draw_rows(P_cum, cell, rng)
    mean = game.tabular.r.reshape(-1)[cell]
    r = (rng.random(n) < mean).astype(np.float64) if rewards == "bernoulli" else mean
    actions = np.stack(np.unravel_index(a, game.action_counts), axis=1).astype(np.int64)
    return OfflineDataset(
        states=s,
        actions=actions,
        rewards=r,
        next_states=s_next,
        n_states=n_s,
        action_counts=game.action_counts,
        game_digest=game_digest(game),
        description=(
            f"game={game.name}; coverage={float(coverage):g}; rewards={rewards}; s~{where}"
        ),
    )
