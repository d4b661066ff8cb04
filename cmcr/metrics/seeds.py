"""Scores over training seeds: mean ± standard deviation, and whether two variants differ beyond the spread.

Every variant trains once per entry of ``seeds`` in params.yaml; the seed sets the projectors'
initialisation, the shuffling and the Eq. 3 noise, and is the *same* for every variant — so variant X
trained with seed s and row K trained with seed s start from the same weights and see the batches in the
same order. That makes the comparison of X with K a **paired** one: :func:`paired_difference` takes the
per-seed differences d_s = X_s − K_s and calls the difference real when a two-sided paired t-test rejects
"no difference" at 5 % (|mean d| > t₀.₉₇₅,ₙ₋₁ · sd(d) / √n). With one seed nothing is marked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: keys a seed summary adds beside the mean scores (the scores themselves stay where a single run had them)
STD, SEEDS = "std", "seeds"
#: a flat headline key that is a headline's spread or one seed's value (``K_A2I_mAP_std``, ``K_A2I_mAP_seed2``)
SPREAD_KEY = re.compile(r"_(std|seed\d+)$")


def seed_entries(flat: Mapping[str, Any], key: str) -> dict[str, float]:
    """``{seed: value}`` of headline ``key`` in a flat mapping holding ``<key>_seed<s>`` entries (a
    ``metrics/summary_seeds.json`` block, or an ``exp_show`` row)."""
    prefix = key + "_seed"
    return {name[len(prefix):]: float(value) for name, value in flat.items()
            if name.startswith(prefix) and name[len(prefix):].isdigit() and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1 in the denominator; ``None`` for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, prefix + (key,)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + (key,)] = float(value)
    return out


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def summarize_seeds(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's metrics over seeds: the mean of every number (in the layout of a single run's metrics,
    e.g. ``{"A2I": {"mAP": …}}``), ``"std"`` in the same layout (``None`` with one seed) and ``"seeds"``
    (the per-seed metrics as given). Every seed must report the same numbers."""
    if not per_seed:
        raise ValueError("no seeds")
    leaves = {seed: _leaves(m) for seed, m in per_seed.items()}
    keys = next(iter(leaves.values())).keys()
    for seed, values in leaves.items():
        if values.keys() != keys:
            raise ValueError(f"seed {seed} reports {sorted(values)} but another seed {sorted(keys)}")
    stats = {path: mean_std([leaves[s][path] for s in leaves]) for path in keys}
    return _nest({p: m for p, (m, _) in stats.items()}) | {
        STD: _nest({p: s for p, (_, s) in stats.items()}), SEEDS: {str(s): dict(m) for s, m in per_seed.items()}}


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile (two-sided 95 % by default) with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_difference(values: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, Any]:
    """Per-seed difference ``values − reference`` over the seeds both have: mean, sample std, n, and
    ``significant`` (two-sided paired t-test at 5 %; never with fewer than 2 seeds or a zero spread that
    comes with a zero mean)."""
    seeds = [s for s in values if s in reference]
    if not seeds:
        raise ValueError("no seed in common")
    diffs = [values[s] - reference[s] for s in seeds]
    mean, std = mean_std(diffs)
    n = len(diffs)
    if std is None:
        significant = False
    elif std == 0:
        significant = mean != 0
    else:
        significant = abs(mean) > t_quantile(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "significant": significant}


def seed_values(metrics: Mapping[str, Any], *path: str) -> dict[str, float]:
    """``{seed: value}`` of one score (``path``, e.g. ``"A2I", "mAP"``) from a :func:`summarize_seeds` result."""
    out = {}
    for seed, m in (metrics.get(SEEDS) or {}).items():
        value: Any = m
        for key in path:
            value = value[key]
        out[seed] = float(value)
    return out
