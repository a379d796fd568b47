"""Mixture laws: which weights of the data sources are best, predicted from a swarm of small proxy runs, in one
tested module (the notebook and the commands only call it).

    python -m experiments.mixing fit --csv=FILE [--objective=mean] [--model=both] [--folds=5] [--json]
    python -m experiments.mixing optimize --csv=FILE [--objective=mean] [--model=law] [--bootstrap=100] \\
        [--sweep-file=experiments/configs/mixture_swarm.py] [--max-epochs=4] [--out=optimum.json] [--json]
    python -m experiments.mixing check --csv=PROXIES[,...] --target-csv=FILE --target-tokens=4e6 --proxy-tokens=1e6

The table is experiments.collect's (one `weight/<source>` column per source, `eval/<source>/loss` per source;
each finished run's last row is one point) or any CSV with those columns, one row per run.

- Objectives (declared, never assumed; OBJECTIVES): `mean`, the equal-weighted mean of the sources' held-out
  losses (default); `table1`, their mean under Table 1's weights; `<source>`, one source's held-out loss; `cloze`
  or `next_sentence`, an offline task's error rate (1 - eval/<task>/acc). Every target is fitted on its own and
  the objective's prediction is composed from the per-target ones.
- Models from weights r (one per run, on the simplex) to each target (MODELS):
  `law`: the Data Mixing Law (Ye et al. 2024), L_i(r) = c_i + k_i exp(sum_j t_ij r_j), fitted per target with a
  robust loss (scipy's soft-L1, scale ROBUST_SCALE nats) from many starts. As sum_j r_j = 1, adding a constant to
  every t_ij and dividing k_i by its exponential gives the same law, so t_i is reported centred (sum_j t_ij = 0):
  2 + (n_sources - 1) free parameters per target.
  `loglinear`: RegMix's linear regression (Liu et al. 2024) on log-weights, L_i(r) = b_i + sum_j beta_ij log r_j:
  1 + n_sources parameters. (LightGBM, RegMix's other regressor, is not a dependency of this project.)
  Each with k-fold cross-validated Spearman rho and mean absolute error per target and for the objective.
- Repetition: training `tokens` with weights r repeats source j r_j tokens / U_j times (U_j its unique tokens);
  the search only considers mixtures that repeat no source more than `max_epochs` times at the target run's
  budget (default 4, Muennighoff et al. 2023) and give every source at least the swarm's floor (the laws are
  not fitted below it).
- The optimum: the best of many feasible Dirichlet candidates, refined by SLSQP within the same box and simplex;
  its predicted objective with an interval from refitting bootstrap resamples of the mixtures (runs of one
  mixture, e.g. seeds, resampled together) and predicting at the chosen weights, and each resample's own
  optimum for the spread of the weights.
- The check at a larger size (`check`): the proxy-target Spearman rho over the mixtures trained at both sizes
  (bootstrap interval over mixtures), the best target mixture against Table 1 with the seed noise of the
  difference, and the extra tokens Table 1 needs to reach it, read off Table 1's annealed target runs at several
  budgets.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from llama_jax import cli, corpus_spec, platforms

SOURCES = corpus_spec.SOURCE_NAMES
TABLE1 = {name: weight for name, (weight, _) in corpus_spec.TABLE1.items()}
TASKS = ("cloze", "next_sentence")
OBJECTIVES = ("mean", "table1", *SOURCES, *TASKS)
MAX_EPOCHS = 4.0  # Muennighoff et al. 2023: up to ~4 epochs cost little, beyond that returns fall fast
WEIGHT_TOLERANCE = 1e-4  # a table's weights sum to 1 within this (collect writes them in full precision)
ROBUST_SCALE = 0.02  # nats: residuals beyond this count linearly (an outlier run pulls the fit less)
LAW_STARTS = 48
DEFAULT_SWEEP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "mixture_swarm.py")


def weight_column(source: str) -> str:
    """The collected table's column of a source's sampling weight."""
    return f"weight/{source}"


# --------------------------------------------------------------------------------------------------- weights
def check_weights(weights: Mapping[str, float], names: Sequence[str] = SOURCES, where: str = "weights") -> np.ndarray:
    """`weights` ({source: weight}) as an array in the order of `names`; an error when one is negative, names an
    unknown source, or they do not sum to 1."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"{where} name unknown source(s) {unknown}; the sources are {list(names)}")
    w = np.array([float(weights.get(name, 0.0)) for name in names])
    bad = [f"{name}={value:g}" for name, value in zip(names, w, strict=True) if not (math.isfinite(value) and value >= 0)]
    if bad:
        raise ValueError(f"{where}: weights must be finite and >= 0, got {', '.join(bad)}")
    if abs(w.sum() - 1) > WEIGHT_TOLERANCE:
        raise ValueError(f"{where}: weights sum to {w.sum():.6g}, expected 1")
    return w


def epochs(weights: np.ndarray, tokens: float, unique_tokens: np.ndarray) -> np.ndarray:
    """[..., n_sources] epochs of each source that training `tokens` tokens with `weights` implies."""
    return np.asarray(weights) * tokens / np.asarray(unique_tokens)


def caps(tokens: float, unique_tokens: np.ndarray, max_epochs: float = MAX_EPOCHS) -> np.ndarray:
    """[n_sources] the largest weight of each source that repeats it at most `max_epochs` times in `tokens`."""
    return np.minimum(1.0, max_epochs * np.asarray(unique_tokens, float) / tokens)


def check_feasible(cap: np.ndarray, floor: float, names: Sequence[str] = SOURCES) -> None:
    """An error when no mixture gives every source at least `floor` and at most its cap."""
    low = [name for name, c in zip(names, cap, strict=True) if c < floor]
    if low or cap.sum() < 1:
        why = (f"{low} cannot even get the floor weight {floor:g}" if low
               else f"the caps sum to {cap.sum():.3g} < 1 ({dict(zip(names, np.round(cap, 4).tolist(), strict=True))})")
        raise ValueError(f"no mixture meets the repetition constraint: {why}; allow more epochs (--max-epochs), "
                         "train the target on fewer tokens, or add data")


def feasible(weights: np.ndarray, cap: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """[...] whether each mixture respects every source's cap and the floor."""
    weights = np.asarray(weights)
    return np.all((weights <= cap + 1e-9) & (weights >= floor - 1e-9), axis=-1)


def concentration(center: np.ndarray, low: float = 0.5) -> float:
    """The Dirichlet concentration (sum of its parameters) of the swarm around `center`: the largest at which the
    largest source's 5th percentile is at most `low` times its centre weight, so that the dominant source ranges
    down to half its weight and the others, whose draws spread further, up to several times theirs."""
    from scipy import optimize, stats

    c = float(np.max(center))
    return float(optimize.brentq(lambda a: stats.beta.ppf(0.05, a * c, a * (1 - c)) - low * c, 1e-2, 1e4))


def swarm(k: int, seed: int, center: np.ndarray, floor: float, cap: np.ndarray, alpha: float | None = None,
          ) -> np.ndarray:
    """[k, n_sources] mixtures drawn from a Dirichlet centred on `center` with concentration `alpha` (default
    `concentration(center)`), each shrunk towards uniform to give every source at least `floor`
    (w = floor + (1 - n floor) d), those violating `cap` redrawn; the same `seed` gives the same swarm."""
    check_feasible(cap, floor)
    alpha = alpha or concentration(center)
    rng = np.random.default_rng(seed)
    n = len(center)
    out: list[np.ndarray] = []
    for _ in range(1000):
        draws = floor + (1 - n * floor) * rng.dirichlet(alpha * np.asarray(center), size=max(k, 64))
        out += list(draws[feasible(draws, cap)])
        if len(out) >= k:
            return np.array(out[:k])
    raise ValueError(f"fewer than 1 in 1000 Dirichlet draws meet the caps {np.round(cap, 4).tolist()}; the caps are "
                     "too tight for a swarm centred on these weights")


def corners(center: np.ndarray, cap: np.ndarray, floor: float, heavy: float = 0.5) -> np.ndarray:
    """[n_sources, n_sources] one mixture per source that moves `heavy` of the mass from `center` to that source
    (heavy x one-hot + (1 - heavy) x centre), moved back towards the centre until it meets the cap and floor."""
    center = np.asarray(center, float)
    out = []
    for i in range(len(center)):
        vertex = np.eye(len(center))[i]
        lam = heavy
        while not feasible(lam * vertex + (1 - lam) * center, cap, floor) and lam > 0:
            lam = round(lam - 0.01, 2)
        if lam <= 0:
            raise ValueError("the centre weights themselves break the caps or the floor; no corner meets them")
        out.append(lam * vertex + (1 - lam) * center)
    return np.array(out)


def by_tokens(unique_tokens: np.ndarray) -> np.ndarray:
    """The uniform-by-tokens mixture: every token of the corpus equally likely (weights proportional to size)."""
    unique_tokens = np.asarray(unique_tokens, float)
    return unique_tokens / unique_tokens.sum()


# --------------------------------------------------------------------------------------------------- objectives
@dataclasses.dataclass(frozen=True)
class Objective:
    """What a mixture is judged by: sum_i coef_i x target_i (lower is better); each target is a column of the
    table, `eval/<source>/loss` in nats, or a task's error rate 1 - `eval/<task>/acc`."""

    name: str
    targets: tuple[str, ...]  # source or task names
    coef: tuple[float, ...]
    kind: str  # "loss" or "error"

    @property
    def columns(self) -> tuple[str, ...]:
        """The table columns the targets come from."""
        return tuple(f"eval/{t}/loss" if self.kind == "loss" else f"eval/{t}/acc" for t in self.targets)

    def combine(self, values: np.ndarray) -> np.ndarray:
        """[..., n_targets] -> [...] the objective."""
        return np.asarray(values) @ np.array(self.coef)


def objective(name: str, names: Sequence[str] = SOURCES) -> Objective:
    """The objective `name` (OBJECTIVES) over the sources `names`."""
    if name == "mean":
        return Objective(name, tuple(names), tuple(1 / len(names) for _ in names), "loss")
    if name == "table1":
        if set(names) != set(TABLE1):
            raise ValueError(f"--objective=table1 weighs LLaMA's seven sources; this table has {list(names)}")
        return Objective(name, tuple(names), tuple(TABLE1[n] for n in names), "loss")
    if name in names:
        return Objective(name, (name,), (1.0,), "loss")
    if name in TASKS:
        return Objective(name, (name,), (1.0,), "error")
    raise ValueError(f"--objective={name!r} is not an objective; choose mean, table1, a source "
                     f"({', '.join(names)}) or a task ({', '.join(TASKS)})")


# --------------------------------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Runs:
    """One point per finished run: names, weights [n, n_sources], target values [n, n_targets] (losses in nats
    or error rates), in the objective's target order."""

    names: list[str]
    sources: tuple[str, ...]
    weights: np.ndarray
    values: np.ndarray
    objective: Objective
    tokens: np.ndarray | None = None  # [n] training tokens of each run's final row, where the table has them

    @property
    def groups(self) -> np.ndarray:
        """[n] the mixture each run trained on (runs of one mixture, e.g. its seeds, are resampled together)."""
        _, index = np.unique(np.round(self.weights, 6), axis=0, return_inverse=True)
        return index.ravel()

    def subset(self, index: np.ndarray) -> Runs:
        return dataclasses.replace(self, names=[self.names[i] for i in index], weights=self.weights[index],
                                   values=self.values[index],
                                   tokens=None if self.tokens is None else self.tokens[index])


def read_runs(rows: list[dict[str, str]], objective_name: str = "mean") -> tuple[Runs, list[str]]:
    """The runs of a CSV (experiments.collect's table: each finished run's last row with every target), and notes
    on what was dropped; errors for a missing weight or target column and for bad weights."""
    if not rows:
        raise ValueError("the CSV has no rows")
    columns = list(rows[0])
    weighted = [c.split("/", 1)[1] for c in columns if c.startswith("weight/")]
    if not weighted:
        raise ValueError(f"the CSV has no weight/<source> columns (collect them with experiments.collect); it has "
                         f"{columns}")
    unknown = sorted(set(weighted) - set(SOURCES))
    if unknown:
        raise ValueError(f"the CSV's weight columns name unknown source(s) {unknown}; the sources are {list(SOURCES)}")
    missing = [weight_column(s) for s in SOURCES if s not in weighted]
    if missing:
        raise ValueError(f"the CSV lacks the weight column(s) {missing}")
    goal = objective(objective_name, SOURCES)
    missing = [c for c in goal.columns if c not in columns]
    if missing:
        hint = " (train with evals.tasks including the task)" if goal.kind == "error" else ""
        raise ValueError(f"the CSV lacks the column(s) {missing} that --objective={goal.name} needs{hint}")
    notes = []
    last: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows):
        if any(row.get(c) in ("", None) for c in goal.columns):
            continue
        name = row.get("run") or f"row {i + 1}"
        if name not in last or float(row.get("step") or 0) >= float(last[name].get("step") or 0):
            last[name] = row
    incomplete = sorted({row.get("run") or f"row {i + 1}" for i, row in enumerate(rows)} - set(last))
    if incomplete:
        notes.append(f"dropped {len(incomplete)} run(s) with no row holding every column of --objective={goal.name} "
                     f"(a source of weight 0 is not evaluated): {', '.join(incomplete)}")
    unfinished = sorted(name for name, row in last.items() if row.get("finished") == "False")  # "": unknown
    if unfinished:
        notes.append(f"dropped {len(unfinished)} unfinished run(s): {', '.join(unfinished)}")
    stable = sorted(name for name, row in last.items() if row.get("annealed") == "False")
    if stable:  # a stable phase's loss is not what a run of its length reaches
        notes.append(f"dropped {len(stable)} run(s) whose schedule does not anneal: {', '.join(stable)}")
    names = [name for name in last if name not in unfinished and name not in stable]
    if not names:
        raise ValueError(f"the CSV has no finished run with every column of --objective={goal.name}")
    weights = np.array([check_weights({s: _num(last[n], weight_column(s), n) for s in SOURCES}, where=f"run {n}")
                        for n in names])
    values = np.array([[_num(last[n], c, n) for c in goal.columns] for n in names])
    if goal.kind == "error":
        values = 1 - values
    tokens = np.array([_num(last[n], "tokens", n) for n in names]) if "tokens" in columns else None
    return Runs(names, SOURCES, weights, values, goal, tokens), notes


def _num(row: dict[str, str], column: str, name: str) -> float:
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise ValueError(f"run {name}: {column}={row[column]!r} is not a number") from None


def read_csv(paths: str) -> list[dict[str, str]]:
    """The rows of one or more comma-separated CSV files (local or gs://), in order."""
    from experiments import scaling

    return [row for path in paths.split(",") for row in scaling.read_csv(path)]


# --------------------------------------------------------------------------------------------------- models
class Law:
    """Fitted Data Mixing Laws, one per target: L_i(r) = c_i + k_i exp(sum_j t_ij r_j), t_i centred."""

    name = "law"

    def __init__(self, c: np.ndarray, k: np.ndarray, t: np.ndarray):
        self.c, self.k, self.t = np.asarray(c, float), np.asarray(k, float), np.asarray(t, float)

    @staticmethod
    def n_params(n_sources: int) -> int:
        return n_sources + 1

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """[n, n_sources] -> [n, n_targets]."""
        return self.c + self.k * np.exp(np.asarray(weights) @ self.t.T)

    def to_dict(self, sources_: Sequence[str], targets: Sequence[str]) -> dict:
        return {t: {"c": float(c), "k": float(k), "t": dict(zip(sources_, row.tolist(), strict=True))}
                for t, c, k, row in zip(targets, self.c, self.k, self.t, strict=True)}


def _basis(n: int) -> np.ndarray:
    """[n, n - 1] an orthonormal basis of the vectors that sum to zero (the law's gauge)."""
    q, _ = np.linalg.qr(np.vstack([np.ones(n), np.eye(n)[:-1]]).T)
    return q[:, 1:]


def _fit_one_law(w: np.ndarray, y: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """Best (c, log k, u) of one target from `starts` [s, n + 1] (t = basis u), and its robust cost."""
    from scipy import optimize

    basis = _basis(w.shape[1])
    x = w @ basis  # [runs, n - 1]

    def residuals(p):
        return p[0] + np.exp(p[1] + x @ p[2:]) - y

    def jacobian(p):
        e = np.exp(p[1] + x @ p[2:])
        return np.hstack([np.ones((len(y), 1)), e[:, None], e[:, None] * x])

    best, best_cost = None, np.inf
    for p0 in starts:
        p0 = p0.copy()
        p0[0] = min(p0[0], y.min() - 1e-3)
        result = optimize.least_squares(residuals, p0, jac=jacobian, loss="soft_l1", f_scale=ROBUST_SCALE, method="trf",
                                        bounds=([-np.inf] * len(p0), [y.min()] + [np.inf] * (len(p0) - 1)),
                                        max_nfev=400)
        if result.cost < best_cost:
            best, best_cost = result.x, result.cost
    return best, float(best_cost)


def law_starts(y: np.ndarray, n: int, count: int = LAW_STARTS, seed: int = 0) -> np.ndarray:
    """[count, n + 1] starts of one target's fit: c at 0, half and 0.9 of the lowest loss, log k at the gap
    above it, the centred exponents from a random normal of scale 0.5, 2 or 5 (one start with none)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        c = y.min() * (0.0, 0.5, 0.9)[i % 3]
        scale = (0.0, 0.5, 2.0, 5.0)[(i // 3) % 4]
        out.append(np.concatenate([[c, math.log(max(y.mean() - c, 1e-3))], rng.normal(0, scale, n - 1)]))
    return np.array(out)


def fit_law(weights: np.ndarray, values: np.ndarray, starts: int = LAW_STARTS, seed: int = 0,
            init: Law | None = None) -> Law:
    """The Data Mixing Law of each target column of `values` [n, m] on `weights` [n, n_sources]; from `starts`
    starts each, or (bootstrap refits) from `init`'s parameters and a few of them."""
    n = weights.shape[1]
    basis = _basis(n)
    c, k, t = [], [], []
    for i in range(values.shape[1]):
        y = values[:, i]
        grid = law_starts(y, n, starts, seed + i)
        if init is not None:
            grid = np.vstack([[init.c[i], math.log(init.k[i]), *(init.t[i] @ basis)], grid])
        p, _ = _fit_one_law(weights, y, grid)
        c.append(p[0])
        k.append(math.exp(p[1]))
        t.append(basis @ p[2:])
    return Law(np.array(c), np.array(k), np.array(t))


class LogLinear:
    """Fitted RegMix-style regressions, one per target: L_i(r) = b_i + sum_j beta_ij log r_j."""

    name = "loglinear"

    def __init__(self, b: np.ndarray, beta: np.ndarray):
        self.b, self.beta = np.asarray(b, float), np.asarray(beta, float)

    @staticmethod
    def n_params(n_sources: int) -> int:
        return n_sources + 1

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return self.b + np.log(np.asarray(weights)) @ self.beta.T

    def to_dict(self, sources_: Sequence[str], targets: Sequence[str]) -> dict:
        return {t: {"b": float(b), "beta": dict(zip(sources_, row.tolist(), strict=True))}
                for t, b, row in zip(targets, self.b, self.beta, strict=True)}


def fit_loglinear(weights: np.ndarray, values: np.ndarray, **_) -> LogLinear:
    """Least squares of each target column of `values` on [1, log weights]."""
    x = np.hstack([np.ones((len(weights), 1)), np.log(weights)])
    coef, *_ = np.linalg.lstsq(x, values, rcond=None)
    return LogLinear(coef[0], coef[1:].T)


FITTERS = {"law": fit_law, "loglinear": fit_loglinear}
MODELS = {"law": Law, "loglinear": LogLinear}


def fit(runs: Runs, model: str = "law", seed: int = 0, **options):
    """The model `model` fitted on every run; an error when there are fewer runs than it has parameters."""
    check_enough(runs, model)
    return FITTERS[model](runs.weights, runs.values, seed=seed, **options)


def check_enough(runs: Runs, model: str) -> None:
    """An error for an unknown model, or for fewer runs than it has parameters per target."""
    if model not in FITTERS:
        raise ValueError(f"--model={model!r} is not a model; choose one of {sorted(FITTERS)}")
    if model == "loglinear" and (runs.weights <= 0).any():
        zero = [runs.names[i] for i in np.flatnonzero((runs.weights <= 0).any(axis=1))]
        raise ValueError(f"the loglinear model regresses on log-weights, so every weight must be > 0; "
                         f"{len(zero)} run(s) give a source weight 0: {', '.join(zero[:5])}")
    needed = MODELS[model].n_params(len(runs.sources))
    if len(runs.names) < needed:
        raise ValueError(f"{len(runs.names)} run(s) cannot fit the {model} model: it has {needed} parameters per "
                         f"target; train at least {needed} (several times more for cross-validation)")


def cross_validate(runs: Runs, model: str = "law", folds: int = 5, seed: int = 0, starts: int = 12) -> dict:
    """k-fold cross-validation, mixtures (not runs) assigned to folds: per target and for the objective, the
    out-of-fold predictions, their Spearman rho with the observed values and mean absolute error."""
    from scipy import stats

    check_enough(runs, model)
    groups = runs.groups
    n_groups = groups.max() + 1
    if folds < 2 or folds > n_groups:
        raise ValueError(f"--folds={folds} must be in [2, {n_groups}] (the table has {n_groups} distinct mixtures)")
    fold_of_group = np.random.default_rng(seed).permutation(n_groups) % folds
    predicted = np.empty_like(runs.values)
    options = {"starts": starts} if model == "law" else {}
    for f in range(folds):
        test = fold_of_group[groups] == f
        law = fit(runs.subset(np.flatnonzero(~test)), model, seed, **options)
        predicted[test] = law.predict(runs.weights[test])
    result = {"model": model, "folds": folds, "targets": {}}
    for i, target in enumerate(runs.objective.targets):
        result["targets"][target] = _agreement(predicted[:, i], runs.values[:, i], stats)
    result["objective"] = _agreement(runs.objective.combine(predicted), runs.objective.combine(runs.values), stats)
    result["predicted"] = predicted
    return result


def _agreement(predicted: np.ndarray, observed: np.ndarray, stats) -> dict:
    rho = stats.spearmanr(predicted, observed).statistic if np.ptp(observed) > 0 else math.nan
    return {"spearman": float(rho), "mae": float(np.mean(np.abs(predicted - observed)))}


# --------------------------------------------------------------------------------------------------- the optimum
def candidates(count: int, seed: int, center: np.ndarray, floor: float, cap: np.ndarray) -> np.ndarray:
    """[count', n] feasible candidate mixtures: Dirichlet draws around `center` at three concentrations (near,
    the swarm's, wide) and flat over the simplex, shrunk to the floor, those breaking a cap dropped."""
    rng = np.random.default_rng(seed)
    n = len(center)
    alpha = concentration(center)
    params = [alpha * 4 * center, alpha * center, alpha / 4 * center, np.ones(n)]
    draws = np.vstack([rng.dirichlet(p, size=count // len(params)) for p in params])
    draws = floor + (1 - n * floor) * draws
    draws = np.vstack([draws, center[None]]) if feasible(center, cap, floor) else draws
    return draws[feasible(draws, cap, floor)]


def best_mixture(model, goal: Objective, cap: np.ndarray, floor: float, center: np.ndarray, seed: int = 0,
                 count: int = 20_000, refine: int = 8) -> np.ndarray:
    """[n] the mixture minimising `goal` under `model` within the floor, the caps and the simplex: the best
    of `count` candidates, each of the `refine` best refined by SLSQP, the best result."""
    from scipy import optimize

    check_feasible(cap, floor)
    pool = candidates(count, seed, center, floor, cap)
    if not len(pool):
        pool = np.array([_feasible_point(cap, floor)])
    scores = goal.combine(model.predict(pool))
    best = pool[np.argsort(scores)[:refine]]
    bounds = list(zip(np.full(len(cap), floor), cap, strict=True))
    simplex = {"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}
    results = [best[0]]
    for w0 in best:
        out = optimize.minimize(lambda w: float(goal.combine(model.predict(w[None]))[0]), w0, method="SLSQP",
                                bounds=bounds, constraints=[simplex], options={"maxiter": 200, "ftol": 1e-10})
        w = np.clip(out.x, floor, cap)
        w = w / w.sum()
        if feasible(w, cap, floor):
            results.append(w)
    results = np.array(results)
    return results[np.argmin(goal.combine(model.predict(results)))]


def _feasible_point(cap: np.ndarray, floor: float) -> np.ndarray:
    """A mixture within the floor and the caps (they sum to >= 1): the floor, then the rest up to each cap."""
    w = np.full(len(cap), floor)
    for i in np.argsort(-cap):
        w[i] += min(cap[i] - w[i], 1 - w.sum())
    return w


def optimize_mixture(runs: Runs, cap: np.ndarray, floor: float, model: str = "law", bootstrap: int = 100,
                     seed: int = 0, center: np.ndarray | None = None) -> dict:
    """The predicted optimum under the caps and the floor: its weights, its predicted objective and per-target
    values with 2.5-97.5 percentile intervals over `bootstrap` refits on resampled mixtures, the predicted gain
    over `center` (Table 1) with its interval, and each weight's interval over the resamples' own optima."""
    center = np.array([TABLE1[s] for s in runs.sources]) if center is None else np.asarray(center)
    fitted = fit(runs, model, seed)
    weights = best_mixture(fitted, runs.objective, cap, floor, center, seed)
    predicted = fitted.predict(weights[None])[0]
    result = {"model": model, "objective": runs.objective.name, "runs": len(runs.names),
              "weights": dict(zip(runs.sources, weights.tolist(), strict=True)),
              "predicted": float(runs.objective.combine(predicted)),
              "predicted_targets": dict(zip(runs.objective.targets, predicted.tolist(), strict=True)),
              "table1_predicted": float(runs.objective.combine(fitted.predict(center[None])[0])),
              "floor": floor, "caps": dict(zip(runs.sources, cap.tolist(), strict=True)),
              "params": fitted.to_dict(runs.sources, runs.objective.targets), "bootstrap": bootstrap}
    if bootstrap:
        groups = runs.groups
        rng = np.random.default_rng(seed + 1)
        at_optimum, optima, gains = [], [], []
        for _ in range(bootstrap):
            chosen = rng.integers(0, groups.max() + 1, groups.max() + 1)
            index = np.concatenate([np.flatnonzero(groups == g) for g in chosen])
            options = {"starts": 4, "init": fitted} if model == "law" else {}
            refit = fit(runs.subset(index), model, seed, **options)
            at_optimum.append(refit.predict(weights[None])[0])
            gains.append(runs.objective.combine(refit.predict(np.vstack([center, weights]))) @ [1, -1])
            optima.append(best_mixture(refit, runs.objective, cap, floor, center, seed, count=2000, refine=2))
        at_optimum, optima = np.array(at_optimum), np.array(optima)
        result["predicted_interval"] = _interval(runs.objective.combine(at_optimum))
        result["predicted_targets_interval"] = {t: _interval(at_optimum[:, i])
                                                for i, t in enumerate(runs.objective.targets)}
        result["gain_over_table1_interval"] = _interval(np.array(gains))
        result["weights_interval"] = {s: _interval(optima[:, i]) for i, s in enumerate(runs.sources)}
    return result


def _interval(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


# --------------------------------------------------------------------------------------------------- the check
def compare(proxy: Runs, target: Runs, target_tokens: float, center: np.ndarray, bootstrap: int = 1000,
            seed: int = 0, proxy_tokens: float | None = None) -> dict:
    """The check at the target size: per mixture trained there (matched to the proxies by its weights) the
    proxy's and the target's objective (mean over seeds) and the target's per-target values; the proxy-target
    Spearman rho with a bootstrap interval over mixtures; the best target mixture against `center` (Table 1) with
    the seed noise of the difference; and the extra tokens `center` needs to reach that mixture's objective,
    interpolated (log-linear in tokens) between its annealed runs at several budgets."""
    from scipy import stats

    at_budget = np.abs(target.tokens / target_tokens - 1) < 0.02
    if proxy_tokens is not None:
        proxy = proxy.subset(np.flatnonzero(np.abs(proxy.tokens / proxy_tokens - 1) < 0.02))
    key = lambda w: tuple(np.round(w, 6))  # noqa: E731
    proxy_by = {}
    for w, v in zip(proxy.weights, proxy.objective.combine(proxy.values), strict=True):
        proxy_by.setdefault(key(w), []).append(v)
    mixtures: dict[tuple, dict] = {}
    for i in np.flatnonzero(at_budget):
        entry = mixtures.setdefault(key(target.weights[i]), {"runs": [], "values": []})
        entry["runs"].append(target.names[i])
        entry["values"].append(target.values[i])
    rows, squares, dof = [], 0.0, 0
    for k, entry in mixtures.items():
        objective_values = target.objective.combine(np.array(entry["values"]))
        squares += float(((objective_values - objective_values.mean()) ** 2).sum())
        dof += len(objective_values) - 1
        rows.append({"weights": dict(zip(target.sources, k, strict=True)), "runs": entry["runs"],
                     "target": float(objective_values.mean()), "seeds": len(objective_values),
                     "target_values": dict(zip(target.objective.targets, np.mean(entry["values"], 0).tolist(),
                                               strict=True)),
                     "proxy": float(np.mean(proxy_by[k])) if k in proxy_by else None})
    noise = math.sqrt(squares / dof) if dof else None
    result = {"objective": target.objective.name, "target_tokens": target_tokens, "mixtures": rows,
              "seed_noise": noise}
    paired = [(r["proxy"], r["target"]) for r in rows if r["proxy"] is not None]
    if len(paired) >= 3:
        p, t = np.array(paired).T
        rng = np.random.default_rng(seed)
        draws = [stats.spearmanr(p[i], t[i]).statistic for i in (rng.integers(0, len(p), len(p))
                                                                  for _ in range(bootstrap))]
        draws = np.array([d for d in draws if np.isfinite(d)])
        result["spearman"] = float(stats.spearmanr(p, t).statistic)
        result["spearman_interval"] = _interval(draws) if len(draws) else None
        result["spearman_mixtures"] = len(p)
    base = next((r for r in rows if np.allclose(list(r["weights"].values()), center, atol=1e-6)), None)
    best = min(rows, key=lambda r: r["target"]) if rows else None
    if base is not None and best is not None and best is not base:
        difference = base["target"] - best["target"]
        se = noise * math.sqrt(1 / base["seeds"] + 1 / best["seeds"]) if noise is not None else None
        result["best_against_center"] = {"best": best["weights"], "difference": difference, "difference_se": se,
                                         "beats_seed_noise": bool(se is not None and difference > 2 * se),
                                         "extra_tokens": _extra_tokens(target, center, best["target"], target_tokens)}
    return result


def _extra_tokens(target: Runs, center: np.ndarray, goal: float, target_tokens: float) -> dict:
    """The tokens `center`'s annealed target runs need to reach objective `goal`: their objective (mean over
    seeds) at each budget, and the fraction beyond target_tokens where the curve crosses `goal` (log-linear
    between budgets; None when it does not cross within them)."""
    at = np.flatnonzero(np.all(np.abs(target.weights - center) < 1e-6, axis=1))
    budgets = sorted({float(t) for t in target.tokens[at]})
    curve = [float(np.mean(target.objective.combine(target.values[at][target.tokens[at] == b]))) for b in budgets]
    crossing = None
    for (b0, y0), (b1, y1) in zip(zip(budgets, curve, strict=True), zip(budgets[1:], curve[1:], strict=True),
                                  strict=False):
        if y0 >= goal >= y1 and y0 != y1:
            crossing = math.exp(math.log(b0) + (y0 - goal) / (y0 - y1) * (math.log(b1) - math.log(b0)))
            break
    if curve and curve[0] <= goal:
        crossing = budgets[0]
    return {"budgets": budgets, "objective": curve,
            "extra_fraction": None if crossing is None else crossing / target_tokens - 1}


def format_compare(result: dict) -> str:
    lines = [f"target runs at {result['target_tokens']:.3g} tokens, --objective={result['objective']}"
             f" (seed noise {result['seed_noise'] or math.nan:.4f})"]
    for row in sorted(result["mixtures"], key=lambda r: r["target"]):
        proxy = f"{row['proxy']:.4f}" if row["proxy"] is not None else "-"
        lines.append(f"  target {row['target']:.4f} ({row['seeds']} seeds)  proxy {proxy}  {', '.join(row['runs'])}")
    if "spearman" in result:
        ci = result["spearman_interval"] or [math.nan, math.nan]
        lines.append(f"  proxy-target Spearman rho {result['spearman']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] over "
                     f"{result['spearman_mixtures']} mixtures")
    best = result.get("best_against_center")
    if best:
        extra = best["extra_tokens"]["extra_fraction"]
        lines.append(f"  best mixture beats Table 1 by {best['difference']:+.4f} (se {best['difference_se'] or math.nan:.4f}; "
                     f"{'beyond' if best['beats_seed_noise'] else 'within'} 2 se of seed noise); Table 1 needs "
                     + (f"{extra:+.0%} tokens to match it" if extra is not None else "more tokens than it trained"))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- commands
def sweep_constants(path: str) -> dict:
    """UNIQUE_TOKENS, TARGET_TOKENS, FLOOR and MAX_EPOCHS of a mixture sweep file (for the constraint)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--sweep-file={path} does not exist; e.g. experiments/configs/mixture_swarm.py")
    module_spec = importlib.util.spec_from_file_location("mixture_sweep_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    names = ("UNIQUE_TOKENS", "TARGET_TOKENS", "FLOOR", "MAX_EPOCHS")
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise ValueError(f"{path} lacks {missing}: a mixture sweep file states the sources' unique tokens, the "
                         "target run's tokens, the swarm's floor weight and the maximum epochs")
    return {name: getattr(module, name) for name in names}


def provenance() -> dict:
    """The command, UTC date, machine and commit of a result written to disk."""
    import datetime

    from experiments import scaling

    return {"command": " ".join(["python -m experiments.mixing", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platforms.cpu_model()}, {os.cpu_count()} cores", "commit": scaling.git_commit()}


def format_cv(cv: dict) -> str:
    lines = [f"{cv['model']}: {cv['folds']}-fold cross-validation (out-of-fold predictions)"]
    for target, a in [*cv["targets"].items(), ("objective", cv["objective"])]:
        lines.append(f"  {target:14s} Spearman rho {a['spearman']:+.3f}   MAE {a['mae']:.4f}")
    return "\n".join(lines)


def format_optimum(result: dict) -> str:
    lines = [f"optimum of --objective={result['objective']} under the {result['model']} model ({result['runs']} runs, "
             f"floor {result['floor']:g}, caps from the repetition constraint)"]
    ci = result.get("predicted_interval")
    lines.append(f"  predicted objective {result['predicted']:.4f}" + (f"  95% CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                 + f"   Table 1's: {result['table1_predicted']:.4f}")
    for source, w in result["weights"].items():
        interval = result.get("weights_interval", {}).get(source)
        extra = f"  resampled optima [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        lines.append(f"  {source:14s} {w:.4f} (Table 1 {TABLE1.get(source, math.nan):.3f}, cap {result['caps'][source]:.3f}){extra}")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "predicted" or not isinstance(v, np.ndarray)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.mixing", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    subs = {name: commands.add_parser(name, help=text) for name, text in
            (("fit", "fit the models; cross-validated rho and MAE per target"),
             ("optimize", "the predicted optimum under the repetition constraint, with bootstrap intervals"),
             ("check", "the target runs against the proxies: rank correlation, the best against Table 1"))}
    for name, sub in subs.items():
        sub.add_argument("--csv", required=True, help="experiments.collect's table(s), comma-separated (weight/<source> "
                         "columns); for check, the proxies' runs")
        sub.add_argument("--objective", default="mean", help=f"one of {', '.join(OBJECTIVES)}")
        if name != "check":
            sub.add_argument("--model", default="both" if name == "fit" else "law",
                             choices=(["both"] if name == "fit" else []) + sorted(FITTERS))
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
    subs["fit"].add_argument("--folds", type=int, default=5)
    subs["check"].add_argument("--target-csv", "--target_csv", required=True, help="the target runs' table")
    subs["check"].add_argument("--target-tokens", "--target_tokens", type=float, required=True)
    subs["check"].add_argument("--proxy-tokens", "--proxy_tokens", type=float, required=True)
    opt = subs["optimize"]
    opt.add_argument("--bootstrap", type=int, default=100, help="resamples of the mixtures for the intervals")
    opt.add_argument("--sweep-file", "--sweep_file", default=DEFAULT_SWEEP_FILE,
                     help="the swarm's sweep file: unique tokens, target tokens, floor, maximum epochs")
    opt.add_argument("--max-epochs", "--max_epochs", type=float, help="override the sweep file's MAX_EPOCHS")
    opt.add_argument("--target-tokens", "--target_tokens", type=float, help="override its TARGET_TOKENS")
    opt.add_argument("--out", help="also write the result here as JSON (never overwritten)")
    args = cli.parse_args(parser, sys.argv[1:])
    runs, notes = read_runs(read_csv(args.csv), args.objective)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.command == "fit":
        models = sorted(FITTERS) if args.model == "both" else [args.model]
        cvs = [cross_validate(runs, m, args.folds, args.seed) for m in models]
        fits = {m: fit(runs, m, args.seed).to_dict(runs.sources, runs.objective.targets) for m in models}
        if args.json:
            print(json.dumps({"objective": runs.objective.name, "runs": runs.names,
                              "cross_validation": [_jsonable(cv) for cv in cvs], "params": fits}, indent=1))
        else:
            print("\n".join(format_cv(cv) for cv in cvs))
        return
    if args.command == "check":
        target, notes = read_runs(read_csv(args.target_csv), args.objective)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        if target.tokens is None:
            raise ValueError(f"--target-csv={args.target_csv} has no tokens column (collect it with experiments.collect)")
        if runs.tokens is None:
            raise ValueError(f"--csv={args.csv} has no tokens column (collect it with experiments.collect)")
        result = compare(runs, target, args.target_tokens, np.array([TABLE1[s] for s in runs.sources]), seed=args.seed,
                         proxy_tokens=args.proxy_tokens)
        print(json.dumps(result, indent=1) if args.json else format_compare(result))
        return
    constants = sweep_constants(args.sweep_file)
    if args.out and os.path.exists(args.out):
        raise FileExistsError(f"--out={args.out} exists; results are never overwritten: move it or choose another")
    max_epochs = args.max_epochs if args.max_epochs is not None else constants["MAX_EPOCHS"]
    target_tokens = args.target_tokens or constants["TARGET_TOKENS"]
    unique = np.array([constants["UNIQUE_TOKENS"][s] for s in runs.sources])
    cap = caps(target_tokens, unique, max_epochs)
    result = optimize_mixture(runs, cap, constants["FLOOR"], args.model, args.bootstrap, args.seed)
    result.update(target_tokens=target_tokens, max_epochs=max_epochs,
                  epochs=dict(zip(runs.sources, epochs(np.array(list(result["weights"].values())), target_tokens,
                                                        unique).tolist(), strict=True)), csv=args.csv,
                  provenance=provenance())
    if args.out:
        with open(args.out, "x") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1) if args.json else format_optimum(result))


if __name__ == "__main__":
    cli.run(main)
