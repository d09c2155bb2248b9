"""Plugin risk terms and constraints of the automatic trajectory search.

Plugins contribute them in their manifest (``[[risk_terms]]``, ``[[constraints]]``, see
``docs/plugins.md``); ``python_name`` names a class or zero-argument factory returning

* a **risk term**: ``evaluate(paths: CandidatePaths) -> array (n,)`` of costs in
  [0, 1] (0 = no risk), added to the search's cost with the weight the user gives it;
* a **constraint**: ``allowed(paths: CandidatePaths) -> bool array (n,)``; candidates
  not allowed are rejected with the reason ``"constraint ID"``.

They are used only when asked for by id (:class:`PluginTerms`), never silently. A term
that fails to load, raises, or returns the wrong shape, NaN or values outside [0, 1]
fails the search with one line naming the plugin (a safety rule that did not run must
not look as if it had).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.plugins import Contribution, Kind, PluginError, PluginRegistry, get_registry

__all__ = ["CandidatePaths", "RiskTerm", "PathConstraint", "PluginTerms", "PluginScores",
           "check_plugin_terms", "score_plugin_terms"]


@dataclass(frozen=True)
class CandidatePaths:
    """The candidate needle paths of one search, as plugins see them.

    Attributes
    ----------
    entries_lps : ndarray (n, 3)
        Skin entry points, LPS mm.
    target_lps : ndarray (3,)
        The target, LPS mm.
    labels : LabelMap
        The structures, on the planning grid (``labels.grid``).
    needle_radius_mm : float
        Radius of the needle.
    """

    entries_lps: NDArray[np.float64]
    target_lps: NDArray[np.float64]
    labels: LabelMap
    needle_radius_mm: float = 0.0

    def __len__(self) -> int:
        return int(self.entries_lps.shape[0])

    @property
    def length_mm(self) -> NDArray[np.float64]:
        """Entry → target length of each candidate, mm."""
        return np.asarray(np.linalg.norm(self.target_lps - self.entries_lps, axis=1))

    def samples(self, step_mm: float) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Points along each path from entry (index 0) to target, ``step_mm`` apart.

        Returns
        -------
        points : ndarray (n, m, 3)
            LPS mm; rows of shorter paths are padded with their target.
        valid : ndarray (n, m) of bool
            Which points lie on the path.
        """
        if not step_mm > 0:
            raise InputError(f"step_mm must be > 0; got {step_mm}")
        length = self.length_mm
        m = int(np.ceil((length.max(initial=0.0)) / step_mm)) + 1
        t_mm = np.arange(m, dtype=float) * step_mm
        frac = np.minimum(t_mm[None, :] / np.maximum(length[:, None], 1e-9), 1.0)
        valid = t_mm[None, :] <= length[:, None] + 1e-9
        points = self.entries_lps[:, None, :] + frac[..., None] * (
            self.target_lps[None, None, :] - self.entries_lps[:, None, :])
        return points, valid


@runtime_checkable
class RiskTerm(Protocol):
    """A soft objective of the search contributed by a plugin."""

    def evaluate(self, paths: CandidatePaths) -> NDArray[np.float64]:
        """Cost of each candidate in [0, 1] (0 = no risk)."""
        ...


@runtime_checkable
class PathConstraint(Protocol):
    """A hard constraint of the search contributed by a plugin."""

    def allowed(self, paths: CandidatePaths) -> NDArray[np.bool_]:
        """Which candidates are allowed."""
        ...


@dataclass(frozen=True)
class PluginTerms:
    """Which plugin risk terms (id → weight) and constraints (ids) a search uses."""

    risk_terms: Mapping[str, float] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, weight in self.risk_terms.items():
            if not (np.isfinite(weight) and weight >= 0):
                raise InputError(f"risk term {name!r}: weight must be a number >= 0; "
                                 f"got {weight}")

    def __bool__(self) -> bool:
        return bool(self.risk_terms) or bool(self.constraints)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored with the search settings)."""
        return {"risk_terms": dict(self.risk_terms), "constraints": list(self.constraints)}


@dataclass
class PluginScores:
    """What the plugin terms add to a search."""

    cost: NDArray[np.float64]  # Σ weight · term, per candidate
    weight_sum: float
    rejected_by: dict[str, NDArray[np.bool_]]  # constraint id -> candidates it rejects


def _build(registry: PluginRegistry, kind: Kind, name: str) -> tuple[Contribution, object]:
    contribution = registry.get(kind, name)
    factory = registry.load(contribution)
    with registry.guard(contribution, "building it"):
        obj = factory() if callable(factory) else factory
    return contribution, obj


def check_plugin_terms(terms: PluginTerms, *, registry: PluginRegistry | None = None) -> None:
    """Fail early (before a long search) when a requested term or constraint is unknown or
    its plugin failed.

    Raises
    ------
    PluginError
        Naming the term and what is available.
    """
    reg = registry or get_registry()
    for name in terms.risk_terms:
        reg.get(Kind.RISK_TERMS, name)
    for name in terms.constraints:
        reg.get(Kind.CONSTRAINTS, name)


def score_plugin_terms(terms: PluginTerms, paths: CandidatePaths, *,
                       only: NDArray[np.bool_] | None = None,
                       registry: PluginRegistry | None = None) -> PluginScores:
    """Evaluate the requested plugin risk terms and constraints on ``paths``.

    Parameters
    ----------
    terms : PluginTerms
    paths : CandidatePaths
    only : bool array (n,), optional
        Evaluate these candidates only (e.g. those still feasible); the others get cost
        0 and are not rejected.
    registry : PluginRegistry, optional
        Default: the application's.

    Raises
    ------
    PluginError
        A term or constraint is unknown, fails to load, raises, or returns an invalid
        array (the message names the plugin and why).
    """
    if only is not None:
        idx = np.flatnonzero(only)
        sub = score_plugin_terms(terms, CandidatePaths(
            paths.entries_lps[idx], paths.target_lps, paths.labels, paths.needle_radius_mm),
            registry=registry)
        cost = np.zeros(len(paths))
        cost[idx] = sub.cost
        rejected_full = {}
        for name, bad in sub.rejected_by.items():
            full = np.zeros(len(paths), dtype=bool)
            full[idx] = bad
            rejected_full[name] = full
        return PluginScores(cost=cost, weight_sum=sub.weight_sum, rejected_by=rejected_full)
    reg = registry or get_registry()
    n = len(paths)
    cost = np.zeros(n)
    wsum = 0.0
    for name, weight in terms.risk_terms.items():
        contribution, term = _build(reg, Kind.RISK_TERMS, name)
        if not isinstance(term, RiskTerm):
            reason = "the object built has no evaluate(paths) method"
            reg.fail(contribution, reason)
            raise PluginError(f"{contribution.describe()} cannot be used: {reason}")
        with reg.guard(contribution, "evaluate"):
            values = np.asarray(term.evaluate(paths), dtype=float)
            if values.shape != (n,):
                raise ValueError(f"returned shape {values.shape}, expected ({n},)")
            if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or \
                    values.max(initial=0) > 1:
                raise ValueError("returned values outside [0, 1] or NaN")
        cost += float(weight) * values
        wsum += float(weight)
    rejected: dict[str, NDArray[np.bool_]] = {}
    for name in terms.constraints:
        contribution, constraint = _build(reg, Kind.CONSTRAINTS, name)
        if not isinstance(constraint, PathConstraint):
            reason = "the object built has no allowed(paths) method"
            reg.fail(contribution, reason)
            raise PluginError(f"{contribution.describe()} cannot be used: {reason}")
        with reg.guard(contribution, "allowed"):
            ok = np.asarray(constraint.allowed(paths))
            if ok.shape != (n,) or ok.dtype != np.bool_:
                raise ValueError(f"returned {ok.dtype} shape {ok.shape}, expected bool ({n},)")
        rejected[name] = ~ok
    return PluginScores(cost=cost, weight_sum=wsum, rejected_by=rejected)
