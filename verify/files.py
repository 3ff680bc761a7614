"""Instance, parameter and estimate files, so that implementations in other frameworks or
languages can be checked against this project's exact oracles (``marl-oracle instance`` and
``marl-oracle check``).

Format (schema :data:`SCHEMA`, version :data:`SCHEMA_VERSION`): one uncompressed ``.npz``
written with :func:`numpy.savez`, read with ``allow_pickle=False``.  Every file holds a field
``meta``, a 0-d unicode array containing one JSON object with exactly the keys
``schema``, ``schema_version``, ``kind`` and the kind's scalars (:data:`META_KEYS`), and
exactly the array fields listed below (no more, no fewer).  Floating fields are float64,
integer fields any integer dtype; every array is stored bitwise, so a round trip is exact.

``kind = "networked-instance"`` (:class:`~reference.instances.NetworkedInstance`)
    meta ``name``, ``source``, ``n_agents``, ``n_states`` (list), ``n_actions`` (list),
    ``gamma``, ``rho`` (``"product"`` or ``"joint"``).  Arrays: ``edges`` ``(E, 2)`` integer,
    the undirected edges ``(u, v)``; ``P_i`` ``(|S_{N_i}|, |A_i|, |S_i|)``, the local kernel
    ``P_i(s'_i | s_{N_i}, a_i)`` whose first axis indexes the states of the closed
    neighbourhood ``N_i`` mixed radix in increasing agent order (lowest agent most
    significant, :mod:`reference.networked.model`); ``rho_i`` ``(|S_i|,)`` per agent if
    ``rho = "product"``, else one ``rho`` ``(prod_i |S_i|,)``; ``r_i`` ``(|S_i|, |A_i|)`` the
    local rewards (the linear utility's).
``kind = "cooperative-game"`` (:class:`~reference.cooperative.game.CooperativeMarkovGame`)
    meta ``name``, ``n_states``, ``action_counts`` (list), ``gamma``.  Arrays ``P``
    ``(nS, |A^0|, ..., |A^{N-1}|, nS)``, ``r`` ``(nS, |A^0|, ..., |A^{N-1}|)``, ``rho`` ``(nS,)``.
``kind = "localized-theta"`` (:class:`~reference.networked.policy.LocalizedSoftmaxPolicy`)
    meta ``n_agents``, ``obs_radius`` (``beta``).  Arrays ``theta_0 ... theta_{n-1}``, each
    ``(|O_i|, |A_i|)`` with ``pi_i(a_i | o_i) = softmax(theta_i[o_i, :])[a_i]``.
``kind = "game-policy"`` (:class:`~reference.cooperative.policy.ConditionalPolicy`)
    meta ``n_agents``.  Arrays ``pi_0 ... pi_{N-1}``: ``pi_m`` has shape
    ``(nS, |A^0|, ..., |A^m|)`` and holds ``pi^m(a^m | s, a^{0:m-1})`` (error messages call it
    ``pi^m``).
``kind = "agent-policy"`` (:class:`AgentPolicy`, scored by :mod:`verify.score`)
    meta ``n_agents``, ``obs_radius`` (``beta``; 0 for a cooperative game, whose agents
    observe the state).  Arrays ``pi_0 ... pi_{n-1}``, each ``(|O_i|, |A_i|)`` (games:
    ``(nS, |A^m|)``), row ``o`` the probabilities ``pi_i(. | o)`` of agent ``i`` at
    observation ``o`` (the observation index convention below); the probabilities are
    checked when the policy is scored, with errors naming the agent and the observation.
``kind = "estimate"`` (:class:`Estimate`)
    meta ``quantity`` (one of :data:`QUANTITIES`), ``count``, ``description``.  Arrays
    ``estimate_0 ... estimate_{count-1}``, one per agent, each of the exact quantity's shape:
    ``gradient`` ``(|O_i|, |A_i|)`` (``grad_{theta_i} F``), ``occupancy`` ``(|S_i|, |A_i|)``
    (``lam_i``, mass ``1/(1-gamma)``), ``shadow-reward`` ``(|S_i|, |A_i|)``
    (``r_i = grad f_i(lam_i)``), ``localized-q`` ``(nS, |A^0|, ..., |A^m|)`` (``Q^{0:m}``).

Observation index convention of ``theta_i`` (checked in ``tests/test_files.py``): agent ``i``
observes ``o_i = s_{N_i^beta}``, the local states of the agents within hop distance
``beta``, taken in increasing agent order and flattened mixed radix with the *lowest-numbered
agent most significant* (C order, :meth:`reference.networked.model.JointSpace.sub_index`).
Worked example: a line ``0 - 1 - 2`` with ``|S_0| = 2, |S_1| = 3, |S_2| = 2`` and
``beta = 1``; agent 1 observes ``N_1 = (0, 1, 2)``, so ``|O_1| = 2 * 3 * 2 = 12`` and the
joint state ``s = (s_0, s_1, s_2) = (1, 2, 0)`` is the row ``o_1 = (s_0 * 3 + s_1) * 2 + s_2
= 1 * 6 + 2 * 2 + 0 = 10`` of ``theta_1``; agent 0 observes ``N_0 = (0, 1)``, row
``o_0 = s_0 * 3 + s_1 = 5``.  With ``beta = 0`` agent ``i`` observes its own state only,
``o_i = s_i``.

Loading: :func:`load_networked`, :func:`load_game`, :func:`load_theta`,
:func:`load_game_policy` and :func:`load_estimate` read every field, check the schema,
version, kind, the exact meta keys and array fields, the dtypes, and then build the object
(whose constructor validates every entry: shapes, distributions, rewards) before returning.
Any failure raises :class:`FileFormatError` (a :class:`~reference.errors.ModelError`) naming
the file and the field; nothing half-loaded is returned.  Saving writes a temporary file in
the target directory and renames it (atomic).

Checking: :func:`check_estimate` computes the exact quantity with ``reference`` and compares
an :class:`Estimate` with it entrywise under a derived tolerance (:func:`estimate_tolerance`)
plus a user ``atol``, reporting the worst entry in an :class:`EstimateCheck`.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from reference._arrays import FloatArray, as_float_array, frozen
from reference._io import atomic_savez, npz_signature_problem
from reference.cooperative.exact import GameValues, evaluate_game
from reference.cooperative.game import CooperativeMarkovGame
from reference.cooperative.policy import ConditionalPolicy
from reference.errors import ModelError
from reference.instances import NetworkedInstance, UtilityKind
from reference.networked.exact import NetworkedSolution, solve
from reference.networked.graph import Graph
from reference.networked.model import NetworkedMDP
from reference.networked.policy import LocalizedSoftmaxPolicy
from reference.networked.utilities import Utility
from verify.tolerances import (
    certified,
    gradient_tolerance,
    linear_solve_tolerance,
    summation_tolerance,
)

__all__ = [
    "KINDS",
    "META_KEYS",
    "QUANTITIES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AgentPolicy",
    "Estimate",
    "EstimateCheck",
    "ExactQuantity",
    "FileFormatError",
    "check_estimate",
    "estimate_tolerance",
    "exact_quantity",
    "file_kind",
    "game_quantity",
    "load_agent_policy",
    "load_estimate",
    "load_game",
    "load_game_policy",
    "load_instance",
    "load_networked",
    "load_theta",
    "networked_quantity",
    "save_agent_policy",
    "save_estimate",
    "save_game",
    "save_game_policy",
    "save_networked",
    "save_theta",
]

SCHEMA = "marl-oracle/exchange"
"""The ``schema`` key of every file's ``meta``."""

SCHEMA_VERSION = 1
"""The file format version this library writes and reads."""

Kind = Literal[
    "networked-instance",
    "cooperative-game",
    "localized-theta",
    "game-policy",
    "agent-policy",
    "estimate",
]
KINDS: tuple[Kind, ...] = (
    "networked-instance",
    "cooperative-game",
    "localized-theta",
    "game-policy",
    "agent-policy",
    "estimate",
)
"""The file kinds."""

Quantity = Literal["gradient", "occupancy", "shadow-reward", "localized-q"]
QUANTITIES: tuple[Quantity, ...] = ("gradient", "occupancy", "shadow-reward", "localized-q")
"""The quantities an estimate file may hold; ``localized-q`` is for cooperative games, the
others for networked instances."""

_COMMON = ("schema", "schema_version", "kind")
META_KEYS: dict[str, tuple[str, ...]] = {
    "networked-instance": (
        *_COMMON, "name", "source", "n_agents", "n_states", "n_actions", "gamma", "rho",
    ),
    "cooperative-game": (*_COMMON, "name", "n_states", "action_counts", "gamma"),
    "localized-theta": (*_COMMON, "n_agents", "obs_radius"),
    "game-policy": (*_COMMON, "n_agents"),
    "agent-policy": (*_COMMON, "n_agents", "obs_radius"),
    "estimate": (*_COMMON, "quantity", "count", "description"),
}
"""The keys of ``meta`` for each kind, no more and no fewer."""


class FileFormatError(ModelError):
    """A file that violates the format of :mod:`verify.files` (unreadable, wrong schema,
    version or kind, a missing or unexpected field, a wrong dtype or shape, or an entry that
    its object's constructor rejects); the message names the file and the field."""


# ---------------------------------------------------------------------------------- writing
def _write(
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    arrays: dict[str, Any],
    argument: str = "path",
) -> None:
    """Write ``meta`` (as JSON) and ``arrays`` to ``path`` atomically (temporary file in the
    same directory, then rename) with the user's umask; a missing or unwritable directory
    raises :class:`~reference.errors.OutputError` naming ``argument`` and ``path``
    (:func:`reference._io.atomic_savez`)."""
    fields: dict[str, npt.NDArray[Any]] = {
        "meta": np.array(json.dumps({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **meta}))
    }
    fields.update(arrays)
    atomic_savez(path, fields, argument)


def _f64(x: npt.ArrayLike) -> FloatArray:
    out: FloatArray = np.ascontiguousarray(x, dtype=np.float64)
    return out


def save_networked(path: str | os.PathLike[str], instance: NetworkedInstance) -> None:
    """Write a networked instance (model and local rewards) in the format of the module
    docstring."""
    m = instance.model
    arrays: dict[str, Any] = {"edges": np.array(m.graph.edges, dtype=np.int64).reshape(-1, 2)}
    for i in range(m.n):
        arrays[f"P_{i}"] = _f64(m.kernels[i])
        arrays[f"r_{i}"] = _f64(instance.rewards[i])
    if isinstance(m.rho, tuple):
        arrays.update({f"rho_{i}": _f64(rho_i) for i, rho_i in enumerate(m.rho)})
    else:
        arrays["rho"] = _f64(m.rho)
    meta = {
        "kind": "networked-instance",
        "name": instance.name,
        "source": instance.source,
        "n_agents": m.n,
        "n_states": list(m.n_states),
        "n_actions": list(m.n_actions),
        "gamma": m.gamma,
        "rho": "product" if isinstance(m.rho, tuple) else "joint",
    }
    _write(path, meta, arrays)


def save_game(path: str | os.PathLike[str], game: CooperativeMarkovGame) -> None:
    """Write a cooperative Markov game in the format of the module docstring."""
    meta = {
        "kind": "cooperative-game",
        "name": game.name,
        "n_states": game.n_states,
        "action_counts": list(game.action_counts),
        "gamma": game.gamma,
    }
    _write(path, meta, {"P": _f64(game.P), "r": _f64(game.r), "rho": _f64(game.rho)})


def save_theta(path: str | os.PathLike[str], policy: LocalizedSoftmaxPolicy) -> None:
    """Write a localized policy's parameters ``theta_i`` and its radius ``beta``."""
    meta = {"kind": "localized-theta", "n_agents": len(policy.theta), "obs_radius": policy.beta}
    _write(path, meta, {f"theta_{i}": _f64(t) for i, t in enumerate(policy.theta)})


def save_game_policy(path: str | os.PathLike[str], policy: ConditionalPolicy) -> None:
    """Write a sequential policy's conditionals ``pi^m`` as fields ``pi_m``."""
    meta = {"kind": "game-policy", "n_agents": len(policy.conditionals)}
    _write(path, meta, {f"pi_{m}": _f64(c) for m, c in enumerate(policy.conditionals)})


@dataclass(frozen=True)
class AgentPolicy:
    """Per-agent probability tables as trained by independent learners.

    Attributes:
        obs_radius: ``beta`` (0 for games).
        tables: ``pi_i`` with shape ``(|O_i|, |A_i|)`` per agent, float64, read-only; rows are
            checked against an instance by :func:`verify.score.score`.
    """

    obs_radius: int
    tables: tuple[FloatArray, ...]

    def __post_init__(self) -> None:
        beta = self.obs_radius
        if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
            raise FileFormatError(f"obs_radius = {beta!r}, expected a non-negative integer")
        if len(self.tables) < 1:
            raise FileFormatError("an agent policy needs at least one table")
        out = []
        for i, t in enumerate(self.tables):
            arr = np.asarray(t)
            if arr.dtype.kind not in "fiu" or arr.ndim != 2 or min(arr.shape) < 1:
                raise FileFormatError(
                    f"pi_{i} has dtype {arr.dtype} and shape {arr.shape}, expected a non-empty "
                    "2-d float64 table (observations, actions)"
                )
            out.append(frozen(arr.astype(np.float64)))
        object.__setattr__(self, "obs_radius", int(beta))
        object.__setattr__(self, "tables", tuple(out))


def save_agent_policy(path: str | os.PathLike[str], policy: AgentPolicy) -> None:
    """Write per-agent probability tables as fields ``pi_0 ... pi_{n-1}``."""
    meta = {"kind": "agent-policy", "n_agents": len(policy.tables), "obs_radius": policy.obs_radius}
    _write(path, meta, {f"pi_{i}": _f64(t) for i, t in enumerate(policy.tables)})


@dataclass(frozen=True)
class Estimate:
    """Per-agent estimates of one named quantity (see the module docstring for the shapes).

    Attributes:
        quantity: one of :data:`QUANTITIES`.
        arrays: one float64 array per agent (read-only); non-finite entries are allowed and
            count as failures in :func:`check_estimate`.
        description: free text (who produced the estimate, how).
    """

    quantity: Quantity
    arrays: tuple[FloatArray, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise FileFormatError(
                f"quantity = {self.quantity!r}, expected one of {list(QUANTITIES)}"
            )
        if len(self.arrays) < 1:
            raise FileFormatError("an estimate needs at least one array")
        out = []
        for k, a in enumerate(self.arrays):
            arr = np.asarray(a)
            if arr.dtype.kind not in "fiu":
                raise FileFormatError(f"estimate_{k} has dtype {arr.dtype}, expected float64")
            out.append(frozen(arr))
        if not isinstance(self.description, str):
            raise FileFormatError("description must be a string")
        object.__setattr__(self, "arrays", tuple(out))


def save_estimate(path: str | os.PathLike[str], estimate: Estimate) -> None:
    """Write an :class:`Estimate` as fields ``estimate_0 ... estimate_{k-1}``."""
    meta = {
        "kind": "estimate",
        "quantity": estimate.quantity,
        "count": len(estimate.arrays),
        "description": estimate.description,
    }
    _write(path, meta, {f"estimate_{k}": _f64(a) for k, a in enumerate(estimate.arrays)})


# ---------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Raw:
    where: str
    meta: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]

    def fail(self, message: str) -> FileFormatError:
        return FileFormatError(f"{self.where}: {message}")


def _open(path: str | os.PathLike[str]) -> _Raw:
    """Read every array of the archive and parse and check ``meta``'s schema and version."""
    where = os.fspath(path)
    arrays: dict[str, npt.NDArray[Any]] = {}
    problem = npz_signature_problem(where)
    if problem is not None:
        raise FileFormatError(f"{where}: not a readable marl-oracle file: it {problem}")
    try:
        archive = np.load(where, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise FileFormatError(f"{where}: a single .npy array, expected an .npz archive")
        with archive:
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as exc:  # pickled object arrays, malformed headers
                    raise FileFormatError(f"{where}: field {name!r} is unreadable ({exc})") from exc
    except FileFormatError:
        raise
    except (
        OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, struct.error,
        # zipfile: an unknown compression method, an "encrypted" flag bit; numpy: an
        # absurd shape in a corrupted member header
        NotImplementedError, RuntimeError, MemoryError,
    ) as exc:
        raise FileFormatError(f"{where}: not a readable marl-oracle file ({exc})") from exc
    if "meta" not in arrays:
        raise FileFormatError(f"{where}: missing field 'meta' (not a {SCHEMA} file)")
    raw = arrays.pop("meta")
    if raw.shape != () or raw.dtype.kind != "U":
        raise FileFormatError(f"{where}: field 'meta' is not a JSON string scalar")
    try:
        meta = json.loads(str(raw[()]), parse_constant=_refuse_constant)
    except ValueError as exc:
        raise FileFormatError(f"{where}: field 'meta' is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where}: field 'meta' is not a JSON object")
    out = _Raw(where, meta, arrays)
    if meta.get("schema") != SCHEMA:
        raise out.fail(f"meta 'schema' = {meta.get('schema')!r}, expected {SCHEMA!r}")
    version = meta.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise out.fail(f"meta 'schema_version' = {version!r} is not an integer")
    if version != SCHEMA_VERSION:
        newer = " (written by a newer marl-oracle)" if version > SCHEMA_VERSION else ""
        raise out.fail(
            f"meta 'schema_version' = {version}{newer}, this library reads {SCHEMA_VERSION}"
        )
    if meta.get("kind") not in KINDS:
        raise out.fail(f"meta 'kind' = {meta.get('kind')!r}, expected one of {list(KINDS)}")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this format accepts")


def file_kind(path: str | os.PathLike[str]) -> Kind:
    """The ``kind`` of a file (after reading it and checking its schema and version)."""
    kind: Kind = _open(path).meta["kind"]
    return kind


def _expect(path: str | os.PathLike[str], kind: Kind) -> _Raw:
    raw = _open(path)
    if raw.meta["kind"] != kind:
        raise raw.fail(f"is a {raw.meta['kind']!r} file, expected a {kind!r} file")
    keys = set(raw.meta)
    missing = [k for k in META_KEYS[kind] if k not in keys]
    extra = sorted(keys - set(META_KEYS[kind]))
    if missing or extra:
        raise raw.fail(
            f"meta is missing keys {missing}, has unexpected keys {extra}; a {kind!r} file's "
            f"meta holds exactly {list(META_KEYS[kind])}"
        )
    return raw


def _fields(raw: _Raw, floats: Sequence[str], ints: Sequence[str] = ()) -> None:
    """The archive holds exactly ``meta`` plus ``floats`` (float64) and ``ints`` (integer)."""
    expected = [*ints, *floats]
    missing = [f for f in expected if f not in raw.arrays]
    extra = sorted(set(raw.arrays) - set(expected))
    if missing or extra:
        raise raw.fail(
            f"missing fields {missing}, unexpected fields {extra}; this file holds exactly "
            f"{['meta', *expected]}"
        )
    for name in floats:
        dt = raw.arrays[name].dtype
        if dt.kind != "f" or dt.itemsize != 8:
            raise raw.fail(f"field {name!r} has dtype {dt}, expected float64")
    for name in ints:
        dt = raw.arrays[name].dtype
        if dt.kind not in "iu":
            raise raw.fail(f"field {name!r} has dtype {dt}, expected an integer dtype")


def _int(raw: _Raw, key: str, minimum: int) -> int:
    value = raw.meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise raw.fail(f"meta {key!r} = {value!r}, expected an integer >= {minimum}")
    return value


def _ints(raw: _Raw, key: str, length: int | None = None) -> tuple[int, ...]:
    value = raw.meta[key]
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise raw.fail(f"meta {key!r} = {value!r}, expected a non-empty list of positive integers")
    if length is not None and len(value) != length:
        raise raw.fail(f"meta {key!r} has {len(value)} entries, expected {length}")
    return tuple(value)


def _float(raw: _Raw, key: str) -> float:
    value = raw.meta[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise raw.fail(f"meta {key!r} = {value!r}, expected a finite number")
    return float(value)


def _str(raw: _Raw, key: str, choices: Sequence[str] | None = None) -> str:
    value = raw.meta[key]
    if not isinstance(value, str) or (choices is not None and value not in choices):
        expected = "a string" if choices is None else f"one of {list(choices)}"
        raise raw.fail(f"meta {key!r} = {value!r}, expected {expected}")
    return value


def _build(raw: _Raw, build: Callable[[], Any]) -> Any:
    """Run a constructor, re-raising its :class:`ModelError` with the file's name."""
    try:
        return build()
    except FileFormatError:
        raise
    except ModelError as exc:
        raise raw.fail(str(exc)) from None


def load_networked(path: str | os.PathLike[str]) -> NetworkedInstance:
    """Read a ``networked-instance`` file; see the module docstring for the checks."""
    raw = _expect(path, "networked-instance")
    n = _int(raw, "n_agents", 1)
    n_states = _ints(raw, "n_states", n)
    n_actions = _ints(raw, "n_actions", n)
    gamma = _float(raw, "gamma")
    rho_kind = _str(raw, "rho", ("product", "joint"))
    name, source = _str(raw, "name"), _str(raw, "source")
    rho_fields = [f"rho_{i}" for i in range(n)] if rho_kind == "product" else ["rho"]
    floats = [f"P_{i}" for i in range(n)] + rho_fields + [f"r_{i}" for i in range(n)]
    _fields(raw, floats, ["edges"])
    edges = raw.arrays["edges"]
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise raw.fail(f"field 'edges' has shape {edges.shape}, expected (E, 2)")
    a = raw.arrays

    def build() -> NetworkedInstance:
        graph = Graph(n, tuple((int(u), int(v)) for u, v in edges.tolist()))
        rho: tuple[FloatArray, ...] | FloatArray = (
            tuple(a[f"rho_{i}"] for i in range(n)) if rho_kind == "product" else a["rho"]
        )
        kernels = tuple(a[f"P_{i}"] for i in range(n))
        if any(k.ndim != 3 for k in kernels):
            i = next(i for i, k in enumerate(kernels) if k.ndim != 3)
            raise ModelError(
                f"P_{i} has shape {kernels[i].shape}, expected (|S_(N_{i})|, |A_{i}|, |S_{i}|)"
            )
        model = NetworkedMDP(graph, n_states, n_actions, kernels, gamma, rho)
        rewards = tuple(
            frozen(as_float_array(a[f"r_{i}"], f"r_{i}", shape=(n_states[i], n_actions[i])))
            for i in range(n)
        )
        return NetworkedInstance(name, model, rewards, source)

    out: NetworkedInstance = _build(raw, build)
    return out


def load_game(path: str | os.PathLike[str]) -> CooperativeMarkovGame:
    """Read a ``cooperative-game`` file; see the module docstring for the checks."""
    raw = _expect(path, "cooperative-game")
    n_states = _int(raw, "n_states", 1)
    counts = _ints(raw, "action_counts")
    gamma = _float(raw, "gamma")
    name = _str(raw, "name")
    _fields(raw, ["P", "r", "rho"])
    expected = (n_states, *counts, n_states)
    if raw.arrays["P"].shape != expected:
        raise raw.fail(f"field 'P' has shape {raw.arrays['P'].shape}, expected {expected}")
    a = raw.arrays
    game: CooperativeMarkovGame = _build(
        raw, lambda: CooperativeMarkovGame(a["P"], a["r"], a["rho"], gamma, name)
    )
    return game


def load_instance(path: str | os.PathLike[str]) -> NetworkedInstance | CooperativeMarkovGame:
    """Read a ``networked-instance`` or ``cooperative-game`` file, whichever it is."""
    kind = file_kind(path)
    if kind == "networked-instance":
        return load_networked(path)
    if kind == "cooperative-game":
        return load_game(path)
    raise FileFormatError(
        f"{os.fspath(path)}: is a {kind!r} file, expected a 'networked-instance' or "
        "'cooperative-game' file"
    )


def load_theta(path: str | os.PathLike[str], model: NetworkedMDP) -> LocalizedSoftmaxPolicy:
    """Read a ``localized-theta`` file as a policy on ``model`` (shapes checked against it)."""
    raw = _expect(path, "localized-theta")
    n = _int(raw, "n_agents", 1)
    beta = _int(raw, "obs_radius", 0)
    if n != model.n:
        raise raw.fail(f"meta 'n_agents' = {n}, the instance has n = {model.n}")
    _fields(raw, [f"theta_{i}" for i in range(n)])
    thetas = tuple(raw.arrays[f"theta_{i}"] for i in range(n))
    policy: LocalizedSoftmaxPolicy = _build(
        raw, lambda: LocalizedSoftmaxPolicy(model, beta, thetas)
    )
    return policy


def load_game_policy(
    path: str | os.PathLike[str], game: CooperativeMarkovGame
) -> ConditionalPolicy:
    """Read a ``game-policy`` file as a sequential policy of ``game``."""
    raw = _expect(path, "game-policy")
    n = _int(raw, "n_agents", 1)
    if n != game.n_agents:
        raise raw.fail(f"meta 'n_agents' = {n}, the game has N = {game.n_agents}")
    _fields(raw, [f"pi_{m}" for m in range(n)])
    conds = tuple(raw.arrays[f"pi_{m}"] for m in range(n))
    policy: ConditionalPolicy = _build(raw, lambda: ConditionalPolicy(game, conds))
    return policy


def load_agent_policy(path: str | os.PathLike[str]) -> AgentPolicy:
    """Read an ``agent-policy`` file (fields, dtypes and 2-d shapes checked; the rows are
    checked against an instance when scored)."""
    raw = _expect(path, "agent-policy")
    n = _int(raw, "n_agents", 1)
    beta = _int(raw, "obs_radius", 0)
    _fields(raw, [f"pi_{i}" for i in range(n)])
    tables = tuple(raw.arrays[f"pi_{i}"] for i in range(n))
    policy: AgentPolicy = _build(raw, lambda: AgentPolicy(beta, tables))
    return policy


def load_estimate(path: str | os.PathLike[str]) -> Estimate:
    """Read an ``estimate`` file (shapes are checked against the exact quantity later, by
    :func:`check_estimate`)."""
    raw = _expect(path, "estimate")
    quantity = _str(raw, "quantity", QUANTITIES)
    count = _int(raw, "count", 1)
    description = _str(raw, "description")
    _fields(raw, [f"estimate_{k}" for k in range(count)])
    arrays = tuple(raw.arrays[f"estimate_{k}"] for k in range(count))
    est: Estimate = _build(
        raw, lambda: Estimate(cast(Quantity, quantity), arrays, description)
    )
    return est


# --------------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class ExactQuantity:
    """The exact per-agent arrays of a quantity and the derived tolerance on each entry."""

    arrays: tuple[FloatArray, ...]
    tolerance: float


def estimate_tolerance(
    quantity: Quantity,
    *,
    n_states: int,
    gamma: float,
    certified_error: float,
    scale: float,
    smoothness: float = 0.0,
    value_error: float = 0.0,
) -> float:
    """The entrywise tolerance between an exact quantity and an independent exact route.

    ``n_states`` is the joint state count of the linear solves, ``certified_error`` the
    certified error of this library's solve (occupancy l1 for networked quantities, value
    inf-norm for ``localized-q``) and ``scale`` the magnitude of the quantity's terms.

    * ``gradient``: :func:`~verify.tolerances.gradient_tolerance` with
      ``reward_bound = scale`` (the largest shadow reward), which covers the rounding of two
      LU routes, plus what this library's certified errors can move ``grad_i[o, b] =
      sum_s lam_S(s) pi_i(b) (Qbar^{(i)}(s, b) - Vbar(s))`` by: the occupancy error
      ``e_lam`` (l1) times ``|Qbar - Vbar| <= 2 scale / (1 - gamma)``; and, over the mass
      ``1/(1-gamma)``, the change of ``Qbar^{(i)} - Vbar``: ``(1 + gamma) value_error`` from
      the team value and ``2 L e_lam / (1 - gamma)`` from the shadow rewards moving by
      ``L e_lam`` (through ``Q`` and ``V``).  With a direct solve these terms are rounding;
      with the iterative matrix-free solve they are the solver's certificates.
    * ``occupancy``: ``lam_i`` sums ``lam_S`` over states, so its l1 error is at most that of
      ``lam_S``: this library's certified error, plus the other route's LU forward error
      (:func:`~verify.tolerances.linear_solve_tolerance` with ``||lam_S||_1 = 1/(1-gamma)``),
      plus the rounding of the grouped sum (:func:`~verify.tolerances.summation_tolerance`).
    * ``shadow-reward``: ``r_i = grad f_i(lam_i)`` moves by at most ``L ||d lam_i||_2`` with
      ``L`` the utility's ``smoothness``, so ``L`` times the occupancy tolerance, plus the
      rounding of the gradient formula (``summation_tolerance(1, scale)``).
    * ``localized-q``: ``Q^{0:m}`` averages ``r + gamma P V``, so ``gamma`` times the
      certified value error, plus the other route's LU error on ``V`` (scale
      ``1/(1-gamma)``, rewards in ``[0, 1]``), plus the rounding of the averages over the
      ``n_states`` terms (``summation_tolerance``).
    """
    mass = 1.0 / (1.0 - gamma)
    occupancy = (
        certified(certified_error, linear_solve_tolerance(n_states, gamma, mass))
        + summation_tolerance(n_states, mass)
    )
    if quantity == "gradient":
        moved = certified_error * 2.0 * scale * mass + mass * (
            (1.0 + gamma) * value_error + 2.0 * smoothness * certified_error * mass
        )
        return gradient_tolerance(n_states, gamma, scale) + moved
    if quantity == "occupancy":
        return occupancy
    if quantity == "shadow-reward":
        return smoothness * occupancy + summation_tolerance(1, max(scale, 1.0))
    return (
        certified(gamma * certified_error, linear_solve_tolerance(n_states, gamma, mass))
        + summation_tolerance(n_states, mass)
    )


def exact_quantity(
    quantity: Quantity,
    instance: NetworkedInstance | CooperativeMarkovGame,
    policy: LocalizedSoftmaxPolicy | ConditionalPolicy,
    utility: UtilityKind = "linear",
) -> ExactQuantity:
    """The exact per-agent arrays of ``quantity`` at ``policy`` and their tolerance.

    Networked instances (``gradient``, ``occupancy``, ``shadow-reward``): one
    :func:`reference.networked.exact.solve` with the instance's ``utility``
    (``proofs_notes/shadow-reward-gradient.md``).  Games (``localized-q``):
    :func:`reference.cooperative.exact.evaluate_game` ``.localized``
    (``proofs_notes/ma-pdl.md#localized-q``).
    """
    if isinstance(instance, CooperativeMarkovGame):
        if quantity != "localized-q" or not isinstance(policy, ConditionalPolicy):
            raise ModelError(
                f"a cooperative game has the quantity 'localized-q' only, not {quantity!r}"
            )
        return game_quantity(instance, evaluate_game(instance, policy))
    if quantity == "localized-q" or not isinstance(policy, LocalizedSoftmaxPolicy):
        raise ModelError(
            f"{quantity!r} needs a cooperative game; a networked instance has 'gradient', "
            "'occupancy' and 'shadow-reward'"
        )
    utilities = instance.utilities(utility)
    sol = solve(instance.model, policy, utilities)
    return networked_quantity(quantity, instance.model, utilities, sol)


def networked_quantity(
    quantity: Quantity,
    model: NetworkedMDP,
    utilities: Sequence[Utility],
    solution: NetworkedSolution,
) -> ExactQuantity:
    """``gradient``, ``occupancy`` or ``shadow-reward`` of an exact ``solution`` with its
    tolerance (:func:`estimate_tolerance` at the largest shadow reward and the utilities'
    largest declared smoothness)."""
    if quantity not in ("gradient", "occupancy", "shadow-reward"):
        raise ModelError(
            f"quantity = {quantity!r}, expected 'gradient', 'occupancy' or 'shadow-reward' "
            "('localized-q' is a quantity of cooperative games: game_quantity)"
        )
    reward_bound = max(float(np.max(np.abs(r))) for r in solution.shadow_rewards)
    arrays = {
        "gradient": solution.gradient,
        "occupancy": solution.local_occupancy,
        "shadow-reward": solution.shadow_rewards,
    }[quantity]
    tol = estimate_tolerance(
        quantity,
        n_states=model.states.size,
        gamma=model.gamma,
        certified_error=solution.occupancy_error_bound,
        scale=reward_bound,
        smoothness=max(f.constants.smoothness for f in utilities),
        value_error=solution.value_error_bound,
    )
    return ExactQuantity(arrays, tol)


def game_quantity(game: CooperativeMarkovGame, values: GameValues) -> ExactQuantity:
    """``localized-q``, the ``Q^{0:m}`` of :func:`reference.cooperative.exact.evaluate_game`,
    with its tolerance (:func:`estimate_tolerance` at the value scale ``1/(1-gamma)``)."""
    tol = estimate_tolerance(
        "localized-q",
        n_states=game.n_states,
        gamma=game.gamma,
        certified_error=values.error_bound,
        scale=1.0 / (1.0 - game.gamma),
    )
    return ExactQuantity(values.localized, tol)


@dataclass(frozen=True)
class EstimateCheck:
    """The verdict of :func:`check_estimate`.

    Attributes:
        quantity: the quantity compared.
        passed: every entry within ``tolerance + atol`` of the exact value (non-finite
            estimates fail).
        entries: number of entries compared.
        failures: number of entries outside the tolerance.
        tolerance: the derived tolerance (:func:`estimate_tolerance`).
        atol: the user's extra absolute tolerance.
        agent: agent of the worst entry (largest ``|estimate - exact|``, non-finite first).
        index: its index inside that agent's array.
        estimate: the estimate there.
        exact: the exact value there.
        error: ``|estimate - exact|`` there (``inf`` if the estimate is not finite).
    """

    quantity: Quantity
    passed: bool
    entries: int
    failures: int
    tolerance: float
    atol: float
    agent: int
    index: tuple[int, ...]
    estimate: float
    exact: float
    error: float


def check_estimate(estimate: Estimate, exact: ExactQuantity, atol: float = 0.0) -> EstimateCheck:
    """Compare ``estimate`` with ``exact`` entrywise: pass iff every
    ``|estimate - exact| <= exact.tolerance + atol``.  Raises :class:`FileFormatError` if the
    number of arrays or a shape differs (bad input, not a failed check)."""
    if not (math.isfinite(atol) and atol >= 0):
        raise ModelError(f"atol = {atol!r}, expected a finite number >= 0")
    if len(estimate.arrays) != len(exact.arrays):
        raise FileFormatError(
            f"the estimate has {len(estimate.arrays)} arrays, expected one per agent "
            f"({len(exact.arrays)})"
        )
    for k, (e, x) in enumerate(zip(estimate.arrays, exact.arrays, strict=True)):
        if e.shape != x.shape:
            raise FileFormatError(
                f"estimate_{k} has shape {e.shape}, expected {x.shape} (agent {k}'s "
                f"{estimate.quantity})"
            )
    bound = exact.tolerance + atol
    worst: tuple[float, int, tuple[int, ...]] = (-1.0, 0, (0,))
    failures = entries = 0
    for k, (e, x) in enumerate(zip(estimate.arrays, exact.arrays, strict=True)):
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(np.isfinite(e), np.abs(e - x), np.inf)
        entries += diff.size
        failures += int(np.count_nonzero(~(diff <= bound)))
        if diff.size and float(diff.max()) > worst[0]:
            idx = tuple(int(j) for j in np.unravel_index(int(np.argmax(diff)), diff.shape))
            worst = (float(diff.max()), k, idx)
    error, agent, index = worst
    return EstimateCheck(
        quantity=estimate.quantity,
        passed=failures == 0,
        entries=entries,
        failures=failures,
        tolerance=exact.tolerance,
        atol=float(atol),
        agent=agent,
        index=index,
        estimate=float(estimate.arrays[agent][index]),
        exact=float(exact.arrays[agent][index]),
        error=max(error, 0.0),
    )
