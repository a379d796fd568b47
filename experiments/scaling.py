"""Scaling-law fits (Hoffmann et al. 2022, "Chinchilla") and forecasts, in one tested module: notebooks and the
commands only call it.

    python -m experiments.scaling fit --csv=results.csv [--json] [--loss=loss] [--params=params] [--bootstrap=200]
    python -m experiments.scaling isoflop --csv=FILE [--json]          # approach 2 (columns params, tokens, loss[, flops])
    python -m experiments.scaling forecast --csv=FIT_RUNS --budget=C [--sizes=N1,N2,N3]  # writes results/forecast.json
    python -m experiments.scaling check-forecast --csv=ALL_RUNS      # predicted against observed

One counting convention throughout (CONVENTION): N non-embedding parameters, C = 6 N D.

- Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. did: the Huber loss (delta 1e-3)
  of log L against log-sum-exp(a - alpha log N, b - beta log D, e) (A = e^a, B = e^b, E = e^e), minimised with
  L-BFGS from every point of their grid of starts (a, b in 0..25, e in -1..1, alpha, beta in 0..2), all starts at
  once (`jax.vmap` over optax's L-BFGS); intervals from refitting bootstrap resamples of the runs.
- Approach 3 by variable projection (Czech et al. 2026): E, A, B by non-negative least squares for each
  (alpha, beta), only the two exponents searched; vectorised over bootstrap resamples and synthetic repetitions.
- Approach 2: IsoFLOP profiles (loss against log N at fixed compute, a parabola through the sizes around each
  minimum, a bootstrap interval on N_opt), then N_opt and D_opt against C as power laws with intervals.
- A forecast: the fit's prediction of runs at a budget above every fit run's, with prediction intervals from
  the bootstrap plus the measured seed noise, written before those runs train and checked after.
- The compute-optimal allocation a fit implies (closed form, C = 6 N D): N_opt = G (C/6)^(beta/(alpha+beta)),
  G = (alpha A / (beta B))^(1/(alpha+beta)), D_opt = C / (6 N_opt).
- LLaMA's argument (§1) made quantitative: the tokens a smaller model needs to reach the loss of the next larger
  one at that one's compute-optimal budget, and what it saves per token at inference (2N FLOPs per token).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from llama_jax import cli

HUBER_DELTA = 1e-3
# Hoffmann et al.'s grid of starting points: a, b in {0, 5, ..., 25}, e in {-1, -0.5, ..., 1}, alpha, beta in
# {0, 0.5, ..., 2}: 4500 starts.
GRID = {"a": np.arange(0, 26, 5.0), "b": np.arange(0, 26, 5.0), "e": np.arange(-1, 1.01, 0.5),
        "alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5)}
# A 243-start grid (a, b in {0, 10, 20}; e, alpha, beta at three values each): quick looks and tests.
COARSE_GRID = {"a": np.array([0.0, 10, 20]), "b": np.array([0.0, 10, 20]), "e": np.array([-1.0, 0, 1]),
               "alpha": np.array([0.0, 1, 2]), "beta": np.array([0.0, 1, 2])}
GRIDS = {"hoffmann": GRID, "coarse": COARSE_GRID}
BOOTSTRAP_STARTS = 8  # each bootstrap resample starts from the full data's 8 best distinct optima
NAMES = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta: loss in nats per token, N parameters, D training tokens."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        """Predicted loss at N parameters and D tokens (arrays broadcast)."""
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt against C: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt against C: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def compute_optimal(self, c):
        """(N_opt, D_opt) at compute C = 6 N D FLOPs, the minimum of L on that budget (closed form)."""
        n = self.G * (np.asarray(c, float) / 6) ** self.a
        return n, np.asarray(c, float) / (6 * n)

    def optimal_tokens(self, n):
        """D for which N is the compute-optimal size: the inverse of compute_optimal's N."""
        c = 6 * (np.asarray(n, float) / self.G) ** (1 / self.a)
        return c / (6 * np.asarray(n, float))

    def tokens_to_reach(self, n, target):
        """Training tokens N parameters need to reach loss `target` (inf where it is at or below E + A / N^alpha)."""
        gap = np.asarray(target, float) - self.E - self.A / np.asarray(n, float) ** self.alpha
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (self.B / np.where(gap > 0, gap, 1.0)) ** (1 / self.beta), np.inf)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# Hoffmann et al. 2022, approach 3 (their eq. 10 as published).
CHINCHILLA = Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@dataclasses.dataclass(frozen=True)
class Fit:
    """An approach-3 fit: the law, its objective, the runs it used, and bootstrap intervals (or None)."""

    law: Law
    objective: float
    runs: int
    starts: int
    intervals: dict[str, tuple[float, float]] | None = None
    bootstrap: int = 0

    def to_dict(self) -> dict:
        law = self.law
        result = {**law.to_dict(), "a": law.a, "b": law.b, "objective": self.objective, "runs": self.runs,
                  "starts": self.starts}
        if self.intervals is not None:
            result["intervals"] = {k: list(v) for k, v in self.intervals.items()}
            result["bootstrap"] = self.bootstrap
            result["confidence"] = 0.95
        return result


def huber(r, delta: float = HUBER_DELTA):
    """Huber loss of residuals r: r^2 / 2 within delta, delta (|r| - delta / 2) beyond."""
    import jax.numpy as jnp

    abs_r = jnp.abs(r)
    return jnp.where(abs_r <= delta, 0.5 * r**2, delta * (abs_r - 0.5 * delta))


def objective(theta, log_n, log_d, log_loss, weights=None, delta: float = HUBER_DELTA):
    """Hoffmann et al.'s objective at theta = (a, b, e, alpha, beta): the sum over runs of the Huber loss of
    log-sum-exp(a - alpha log N, b - beta log D, e) - log L, each run counted `weights` times (default once)."""
    import jax
    import jax.numpy as jnp

    a, b, e, alpha, beta = theta
    predicted = jax.nn.logsumexp(jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)]),
                                 axis=0)
    per_run = huber(predicted - log_loss, delta)
    return jnp.sum(per_run if weights is None else weights * per_run)


def grid_starts(grid: dict[str, np.ndarray]) -> np.ndarray:
    """[starts, 5] every combination of the grid's (a, b, e, alpha, beta)."""
    return np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])))


def _minimize(starts, log_n, log_d, log_loss, weights):
    """(thetas [batch, 5], objectives [batch]): L-BFGS from each row of `starts` on the runs weighted by the same
    row of `weights` ([batch, runs]); all rows at once, in float64."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        thetas, values = _solver()(*(jnp.asarray(x, jnp.float64) for x in (starts, weights, log_n, log_d, log_loss)))
        return np.asarray(thetas), np.asarray(values)


@functools.cache
def _solver(max_steps: int = 300, tol: float = 1e-9):
    """The jitted, vmapped L-BFGS (optax, zoom line search) over rows of starts and weights: compiled once per
    shape, reused by every fit and bootstrap of that shape."""
    import jax
    import optax
    import optax.tree_utils as otu

    def solve(theta0, w, log_n, log_d, log_loss):
        def fun(theta):
            return objective(theta, log_n, log_d, log_loss, w)

        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(carry):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(theta, updates), state

        def going(carry):
            _, state = carry
            count, grad = otu.tree_get(state, "count"), otu.tree_get(state, "grad")
            return (count == 0) | ((count < max_steps) & (otu.tree_norm(grad) >= tol))

        theta, _ = jax.lax.while_loop(going, step, (theta0, opt.init(theta0)))
        return theta, fun(theta)

    return jax.jit(jax.vmap(solve, in_axes=(0, 0, None, None, None)))


MAX_LOG_COEFFICIENT = 300.0  # log A, log B, log E beyond this: the term's exponent ran off to fit a step


class DegenerateFit(ValueError):
    """The runs do not determine the law: the best optimum sends a coefficient to infinity."""


def _law(theta) -> Law:
    a, b, e, alpha, beta = (float(x) for x in theta)
    if max(a, b, e) > MAX_LOG_COEFFICIENT:
        raise DegenerateFit(
            f"the runs do not determine L(N, D): the best fit runs off to log A = {a:.4g} with alpha = {alpha:.4g}, "
            f"log B = {b:.4g} with beta = {beta:.4g} (a term that is a step, not a power law, within the data); "
            "add sizes or budgets, or check the points for noise")
    return Law(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def _best(thetas: np.ndarray, values: np.ndarray) -> int:
    """Index of the lowest finite objective."""
    values = np.where(np.isfinite(values) & np.all(np.isfinite(thetas), axis=-1), values, np.inf)
    if not np.isfinite(values).any():
        raise ValueError("no start of the fit converged to a finite objective; check the data")
    return int(np.argmin(values))


def fit(n: Sequence[float], d: Sequence[float], loss: Sequence[float], *, bootstrap: int = 0, seed: int = 0,
        grid: dict[str, np.ndarray] = GRID) -> Fit:
    """Approach 3 on runs of N parameters, D tokens and final loss L (one entry per run): the best of L-BFGS from
    every start of `grid`; with `bootstrap` > 0, 95% percentile intervals from that many resamples of the runs,
    each refitted from the full data's BOOTSTRAP_STARTS best distinct optima."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    check_points(n, d, loss)
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    starts = grid_starts(grid)
    thetas, values = _minimize(starts, log_n, log_d, log_loss, np.ones((len(starts), len(n))))
    best = _best(thetas, values)
    result = Fit(_law(thetas[best]), float(values[best]), len(n), len(starts))
    if bootstrap <= 0:
        return result
    # Each resample is the runs drawn with replacement, as counts (weights) over the runs, so that every
    # (resample, start) pair is a row of the same vmapped solve, in batches of the grid's size: one compile.
    counts = np.random.default_rng(seed).multinomial(len(n), np.full(len(n), 1 / len(n)), size=bootstrap)
    b_starts = distinct_optima(thetas, values, BOOTSTRAP_STARTS)
    rows_start = np.tile(b_starts, (bootstrap, 1))
    rows_weight = np.repeat(counts.astype(float), len(b_starts), axis=0)
    b_thetas, b_values = [], []
    for first in range(0, len(rows_start), len(starts)):
        chunk = slice(first, first + len(starts))
        pad = len(starts) - len(rows_start[chunk])  # the last batch is filled with copies of its first row
        theta, value = _minimize(np.concatenate([rows_start[chunk], np.repeat(rows_start[chunk][:1], pad, 0)]),
                                 log_n, log_d, log_loss,
                                 np.concatenate([rows_weight[chunk], np.repeat(rows_weight[chunk][:1], pad, 0)]))
        b_thetas.append(theta[:len(starts) - pad])
        b_values.append(value[:len(starts) - pad])
    b_thetas = np.concatenate(b_thetas).reshape(bootstrap, len(b_starts), 5)
    b_values = np.concatenate(b_values).reshape(bootstrap, len(b_starts))
    laws = []
    for i in range(bootstrap):  # a resample that the law does not fit (e.g. one missing a size) has no interval
        try:
            laws.append(_law(b_thetas[i, _best(b_thetas[i], b_values[i])]))
        except DegenerateFit:
            continue
    if not laws:
        raise DegenerateFit(f"no bootstrap resample of the {len(n)} runs determines the law")
    samples = {name: np.array([getattr(law, name) for law in laws]) for name in (*NAMES, "a", "b")}
    intervals = {name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for name, v in samples.items()}
    return dataclasses.replace(result, intervals=intervals, bootstrap=len(laws))


def distinct_optima(thetas: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """[<= k, 5] the lowest-objective solutions that differ from each other by more than 1e-3 (in any of a, b,
    e, alpha, beta), best first: the starts of each bootstrap refit."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(np.where(np.isfinite(values), values, np.inf)):
        if not np.isfinite(values[i]) or len(chosen) == k:
            break
        if all(np.max(np.abs(thetas[i] - c)) > 1e-3 for c in chosen):
            chosen.append(thetas[i])
    return np.array(chosen)


def check_points(n: np.ndarray, d: np.ndarray, loss: np.ndarray, parameters: int = 5) -> None:
    """Raise unless the runs can identify a 5-parameter law: positive finite values, at least as many runs as
    parameters, and more than one size and one token count."""
    for name, values in (("params", n), ("tokens", d), ("loss", loss)):
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            raise ValueError(f"{name} must be positive and finite; run {int(bad[0])} has {name}={values[bad[0]]}")
    if len(n) < parameters:
        raise ValueError(f"{len(n)} runs cannot determine the {parameters} parameters of L(N, D); give at least "
                         f"{parameters} runs")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise ValueError(f"the runs have {len(np.unique(n))} distinct sizes and {len(np.unique(d))} distinct token "
                         "counts; L(N, D) needs at least two of each")


# ------------------------------------------------------------------------------------------------- approach 2
def isoflop(n: Sequence[float], d: Sequence[float], loss: Sequence[float], budgets: Sequence[float] | None = None,
            flops: Sequence[float] | None = None, min_sizes: int = 3, window: int = 5, noise: float | None = None,
            bootstrap: int = 200, seed: int = 0) -> dict:
    """Approach 2 (Hoffmann et al. §3.2): per compute budget C (FLOPs, C = 6 N D unless `flops` gives each run's
    budget), a parabola of loss against log N through the `window` sizes around the lowest loss, N_opt at its
    vertex; then the power laws N_opt = k_N C^a and D_opt = C / (6 N_opt) = k_D C^b.

    Budgets: the runs' own `flops` when given (an IsoFLOP grid: runs of one budget share its value), else
    `budgets`, else 12 log-spaced values across the range of C that `min_sizes` sizes cover, each size's loss
    interpolated in log C between its runs. Every budget with at least `min_sizes` sizes is reported: status "ok",
    or why it has no N_opt ("minimum at the smallest size", "... largest size", "no minimum": an extrapolation,
    not a measurement, so it enters no power law). Intervals (95%): a parametric bootstrap, each profile's
    losses redrawn around its parabola with sd `noise` nats (default: the parabola's residual sd), refitted;
    a and b from the same draws across budgets."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    check_points(n, d, loss, parameters=3)
    c = 6 * n * d if flops is None else np.asarray(flops, float)
    rng = np.random.default_rng(seed)
    profiles = []
    for budget, xs, ys in _profiles(n, c, loss, budgets, flops is not None, min_sizes):
        profiles.append(_profile(budget, xs, ys, window, noise, bootstrap, rng))
    result: dict = {"profiles": profiles, "bootstrap": bootstrap}
    ok = [p for p in profiles if p["status"] == "ok"]
    if len(ok) >= 2:
        log_c = np.log([p["C"] for p in ok])
        a, log_kn = np.polyfit(log_c, np.log([p["N_opt"] for p in ok]), 1)
        b, log_kd = np.polyfit(log_c, np.log([p["D_opt"] for p in ok]), 1)
        result.update({"a": float(a), "b": float(b), "k_N": math.exp(log_kn), "k_D": math.exp(log_kd)})
        draws = np.stack([p.pop("_draws") for p in ok])  # [budgets, bootstrap] log N_opt, nan where none
        valid = np.all(np.isfinite(draws), axis=0)
        if valid.sum() >= 10:
            slopes = np.polyfit(log_c, draws[:, valid], 1)[0]
            result["intervals"] = {"a": _percentiles(slopes), "b": _percentiles(1 - slopes)}
    for p in profiles:
        p.pop("_draws", None)
    return result


def _profiles(n, c, loss, budgets, exact: bool, min_sizes: int):
    """(C, log N [sizes], loss [sizes]) of every budget with at least `min_sizes` sizes; seeds of a size averaged."""
    sizes = np.unique(n)
    if exact:
        keys = budget_groups(c)
        for key in np.unique(keys):
            at = keys == key
            budget = float(np.exp(np.log(c[at]).mean()))
            ns = np.unique(n[at])
            if len(ns) >= min_sizes:
                yield float(budget), np.log(ns), np.array([loss[at & (n == s)].mean() for s in ns])
        return
    if budgets is None:
        grid = np.geomspace(c.min(), c.max(), 200)
        covered = [g for g in grid if sum(c[n == s].min() <= g <= c[n == s].max() for s in sizes) >= min_sizes]
        budgets = np.geomspace(covered[0], covered[-1], 12) if covered else []
    for budget in budgets:
        xs, ys = [], []
        for s in sizes:
            order = np.argsort(c[n == s])
            cs, ls = c[n == s][order], loss[n == s][order]
            if len(cs) >= 2 and cs[0] <= budget <= cs[-1]:
                xs.append(math.log(s))
                ys.append(float(np.interp(math.log(budget), np.log(cs), ls)))
        if len(xs) >= min_sizes:
            yield float(budget), np.array(xs), np.array(ys)


def budget_groups(c: np.ndarray, tolerance: float = 0.05) -> np.ndarray:
    """[runs] a group index per run: runs whose budgets lie within `tolerance` of the next one in sorted order
    share one (a grid's runs miss their nominal budget by the rounding of tokens to whole steps)."""
    order = np.argsort(c)
    gaps = np.diff(np.log(c[order])) > math.log1p(tolerance)
    groups = np.empty(len(c), int)
    groups[order] = np.concatenate([[0], np.cumsum(gaps)])
    return groups


def _profile(budget: float, xs: np.ndarray, ys: np.ndarray, window: int, noise: float | None, bootstrap: int,
             rng: np.random.Generator) -> dict:
    """One budget's IsoFLOP profile: the parabola through the `window` sizes around the lowest loss, its vertex
    (N_opt) and the bootstrap draws of log N_opt ("_draws", nan where a draw has no minimum)."""
    lowest = int(np.argmin(ys))
    first = min(max(lowest - window // 2, 0), max(len(xs) - window, 0))
    used = slice(first, first + window)
    x, y = xs[used], ys[used]
    profile = {"C": budget, "sizes": len(xs), "log_n": xs.tolist(), "loss": ys.tolist(),
               "fit_sizes": [math.exp(v) for v in x], "N_opt": None, "D_opt": None, "loss_opt": None,
               "interval": None, "_draws": np.full(max(bootstrap, 0), np.nan)}
    if lowest in (0, len(xs) - 1):
        profile["status"] = f"minimum at the {'smallest' if lowest == 0 else 'largest'} size: outside the sizes run"
        return profile
    design = np.stack([np.ones_like(x), x, x**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    p0, p1, p2 = coef
    x_opt = -p1 / (2 * p2) if p2 > 0 else np.nan
    profile["parabola"] = [float(p0), float(p1), float(p2)]
    if not x[0] <= x_opt <= x[-1]:
        profile["status"] = "no minimum within the sizes fitted"
        return profile
    residual = y - design @ coef
    sd = noise if noise is not None else (float(np.sqrt(residual @ residual / (len(x) - 3))) if len(x) > 3 else 0.0)
    profile.update(status="ok", N_opt=math.exp(x_opt), D_opt=budget / (6 * math.exp(x_opt)),
                   loss_opt=float(p0 + p1 * x_opt + p2 * x_opt**2), noise=sd)
    if bootstrap > 0 and sd > 0:
        draws = (design @ coef)[None] + rng.normal(0, sd, (bootstrap, len(x)))
        b_coef = np.linalg.lstsq(design, draws.T, rcond=None)[0]  # [3, bootstrap]
        with np.errstate(divide="ignore", invalid="ignore"):
            b_x = np.where(b_coef[2] > 0, -b_coef[1] / (2 * b_coef[2]), np.nan)
        b_x = np.where((b_x >= x[0] - 1) & (b_x <= x[-1] + 1), b_x, np.nan)  # beyond e^1 of the sizes: no minimum
        profile["_draws"] = b_x
        if np.isfinite(b_x).mean() >= 0.5:
            low, high = np.nanpercentile(b_x, [2.5, 97.5])
            profile["interval"] = [math.exp(low), math.exp(high)]
    return profile


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles: a 95% bootstrap interval."""
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def format_isoflop(result: dict) -> str:
    """Approach 2 as text: each budget's profile (N_opt with interval, sizes used, or why none), then a and b."""
    lines = []
    for p in result["profiles"]:
        head = f"  C={p['C']:.3g}: {p['sizes']} sizes, "
        if p["status"] != "ok":
            lines.append(head + p["status"])
            continue
        ci = f" 95% CI [{p['interval'][0]:.4g}, {p['interval'][1]:.4g}]" if p["interval"] else ""
        lines.append(head + f"parabola over {', '.join(f'{s:.3g}' for s in p['fit_sizes'])}: N_opt={p['N_opt']:.4g}"
                     f"{ci}, D_opt={p['D_opt']:.4g}, loss {p['loss_opt']:.4f}")
    for name, label in (("a", "N_opt ~ C^a"), ("b", "D_opt ~ C^b")):
        if name in result:
            interval = result.get("intervals", {}).get(name)
            ci = f"   95% CI [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
            lines.append(f"  {name} ({label}) {result[name]:.4g}{ci}")
    if "a" not in result:
        lines.append("  fewer than 2 budgets have a minimum within their sizes: no N_opt(C) power law")
    if "noise" in result:
        lines.append(f"  intervals: {result['bootstrap']} draws with seed noise {result['noise']:.4g} nats"
                     if result["noise"] is not None else
                     f"  intervals: {result['bootstrap']} draws with each parabola's residual sd (no seeds repeated)")
    return "\n".join([f"approach 2 (IsoFLOP profiles), {len(result['profiles'])} budgets:", *lines])


# -------------------------------------------------------------------------------- approach 3, variable projection
ALPHAS = np.arange(0.1, 2.001, 0.1)  # the exponents' coarse grid; refined REFINE times around the best point
REFINE = 4


def varpro(n, d, loss, weights=None, alphas: np.ndarray = ALPHAS, betas: np.ndarray = ALPHAS) -> dict[str, np.ndarray]:
    """Approach 3 by variable projection (Czech et al. 2026): for each (alpha, beta) the law is linear in
    (E, A, B), solved exactly by non-negative least squares (on loss, in nats), so that only the two exponents
    are searched: a grid, then REFINE finer grids around the best point. Vectorised over leading axes of `loss`
    and `weights` ([..., runs]; weights count each run, as bootstrap resamples do). Returns arrays [...] of E, A,
    B, alpha, beta, a and rss (the weighted residual sum of squares)."""
    log_n, log_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    y = np.asarray(loss, float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, float)
    batch = np.broadcast_shapes(y.shape, w.shape)[:-1]
    y, w = (np.broadcast_to(v, (*batch, len(log_n))).reshape(-1, len(log_n)) for v in (y, w))
    chunks = [_varpro_rows(y[i:i + CHUNK], w[i:i + CHUNK], log_n, log_d, alphas, betas)
              for i in range(0, len(y), CHUNK)]
    return {k: np.concatenate([c[k] for c in chunks]).reshape(batch) for k in chunks[0]}


CHUNK = 256  # fits solved at once: bounds the [fits, alphas, betas, 3, 3] Gram arrays to ~30 MB


def _varpro_rows(y, w, log_n, log_d, alphas, betas) -> dict[str, np.ndarray]:
    """varpro on rows y, w [K, runs]."""
    xn, xd = log_n - log_n.mean(), log_d - log_d.mean()  # features (N / N0)^-alpha: well conditioned
    ga = np.broadcast_to(alphas, (len(y), len(alphas)))
    gb = np.broadcast_to(betas, (len(y), len(betas)))
    step_a, step_b = alphas[1] - alphas[0], betas[1] - betas[0]
    for level in range(REFINE + 1):
        rss, theta = _nnls_grid(y, w, xn, xd, ga, gb)
        best = np.argmin(rss.reshape(len(y), -1), axis=1)
        ia, ib = np.unravel_index(best, rss.shape[1:])
        rows = np.arange(len(y))
        alpha, beta = ga[rows, ia], gb[rows, ib]
        chosen = theta[rows, ia, ib]
        if level < REFINE:
            offsets = np.linspace(-1, 1, 9)
            ga = np.maximum(alpha[:, None] + step_a * offsets, 1e-3)
            gb = np.maximum(beta[:, None] + step_b * offsets, 1e-3)
            step_a, step_b = step_a / 4, step_b / 4
    e, a_, b_ = chosen[:, 0], chosen[:, 1] * np.exp(alpha * log_n.mean()), chosen[:, 2] * np.exp(beta * log_d.mean())
    return {"E": e, "A": a_, "B": b_, "alpha": alpha, "beta": beta, "a": beta / (alpha + beta),
            "rss": rss.reshape(len(y), -1)[rows, best]}


# The non-empty subsets of (E, A, B) that can be the positive ones at the NNLS optimum.
_SUBSETS = [s for k in (1, 2, 3) for s in itertools.combinations(range(3), k)]


def _nnls_grid(y, w, xn, xd, ga, gb):
    """(rss [K, Ga, Gb], theta [K, Ga, Gb, 3]): the exact NNLS of y ~ E + A' u + B' v (u = e^(-alpha xn),
    v = e^(-beta xd)) at every grid point: the best feasible least-squares solution over the subsets of positive
    coefficients, the Gram matrices built by one matrix product per term."""
    u = np.exp(-ga[:, :, None] * xn)  # [K, Ga, R]
    v = np.exp(-gb[:, :, None] * xd)  # [K, Gb, R]
    k, na, nb = len(y), ga.shape[1], gb.shape[1]
    shape = (k, na, nb)
    s1 = np.broadcast_to(w.sum(-1)[:, None, None], shape)
    su = np.broadcast_to(np.einsum("kar,kr->ka", u, w)[:, :, None], shape)
    sv = np.broadcast_to(np.einsum("kbr,kr->kb", v, w)[:, None, :], shape)
    suu = np.broadcast_to(np.einsum("kar,kr->ka", u * u, w)[:, :, None], shape)
    svv = np.broadcast_to(np.einsum("kbr,kr->kb", v * v, w)[:, None, :], shape)
    suv = np.einsum("kar,kbr->kab", u * w[:, None, :], v)
    gram = np.stack([np.stack([s1, su, sv], -1), np.stack([su, suu, suv], -1), np.stack([sv, suv, svv], -1)], -2)
    wy = w * y
    h = np.stack([np.broadcast_to(wy.sum(-1)[:, None, None], shape),
                  np.broadcast_to(np.einsum("kar,kr->ka", u, wy)[:, :, None], shape),
                  np.broadcast_to(np.einsum("kbr,kr->kb", v, wy)[:, None, :], shape)], -1)
    yy = (wy * y).sum(-1)[:, None, None]
    best_rss = np.broadcast_to(yy, shape).copy()  # the empty subset: all coefficients 0
    best_theta = np.zeros((*shape, 3))
    for subset in _SUBSETS:
        idx = list(subset)
        g = gram[..., idx, :][..., :, idx]
        ridge = 1e-12 * np.trace(g, axis1=-2, axis2=-1)[..., None, None] * np.eye(len(idx))
        sol = np.linalg.solve(g + ridge, h[..., idx][..., None])[..., 0]
        rss = yy - np.einsum("...i,...i->...", h[..., idx], sol)
        better = np.all(sol >= 0, axis=-1) & (rss < best_rss)
        best_rss = np.where(better, rss, best_rss)
        theta = np.zeros((*shape, 3))
        theta[..., idx] = sol
        best_theta = np.where(better[..., None], theta, best_theta)
    return best_rss, best_theta


def varpro_fit(n, d, loss, groups: Sequence | None = None, bootstrap: int = 200, seed: int = 0) -> dict:
    """Approach 3 by variable projection on runs (N, D, L), with 95% intervals from `bootstrap` resamples that
    draw whole `groups` (e.g. a size and seed: the runs that share a stable phase are not independent; default:
    each run alone) with replacement. Returns {"law": Law, "intervals": {name: (low, high)}, "samples": {...}}."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    check_points(n, d, loss)
    point = varpro(n, d, loss)
    law = Law(*(float(point[k]) for k in NAMES))
    result = {"law": law, "rss": float(point["rss"]), "runs": len(n), "bootstrap": bootstrap}
    if bootstrap > 0:
        weights = group_resamples(groups if groups is not None else np.arange(len(n)), bootstrap, seed)
        samples = varpro(n, d, np.broadcast_to(loss, weights.shape), weights)
        result["samples"] = samples
        result["intervals"] = {k: _percentiles(samples[k]) for k in (*NAMES, "a")}
    return result


def n_opt_band(samples: dict[str, np.ndarray], compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) [len(compute)]: the 2.5 and 97.5 percentiles of N_opt(C) over bootstrap `samples` (varpro's
    arrays), resamples whose law has no finite optimum left out."""
    with np.errstate(all="ignore"):
        g = (samples["alpha"] * samples["A"] / (samples["beta"] * samples["B"])) ** (
            1 / (samples["alpha"] + samples["beta"]))
        draws = g[:, None] * (np.asarray(compute, float)[None] / 6) ** samples["a"][:, None]
    draws = draws[np.all(np.isfinite(draws) & (draws > 0), axis=1)]
    if not len(draws):
        raise DegenerateFit("no bootstrap resample's law has a finite compute-optimal size (A or B is 0)")
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def group_resamples(groups: Sequence, bootstrap: int, seed: int = 0) -> np.ndarray:
    """[bootstrap, runs] counts: each resample draws the distinct groups with replacement and counts every run
    of a drawn group once per draw."""
    labels, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(len(labels), np.full(len(labels), 1 / len(labels)), bootstrap)
    return draws[:, inverse].astype(float)


# ---------------------------------------------------------------------------------------- LLaMA's argument
def llama_argument(law: Law, sizes: Iterable[float]) -> list[dict]:
    """For each size and the next larger one: the next one's compute-optimal tokens and loss, the tokens the
    smaller one needs to reach that loss, the training FLOPs of both (6 N D), the inference FLOPs per token each
    spends (2 N) and the inference tokens after which the smaller model has cost less in all."""
    sizes = sorted(float(s) for s in sizes)
    rows = []
    for small, large in itertools.pairwise(sizes):
        d_large = float(law.optimal_tokens(large))
        target = float(law.loss(large, d_large))
        d_small = float(law.tokens_to_reach(small, target))
        train_small, train_large = 6 * small * d_small, 6 * large * d_large
        saved = 2 * (large - small)
        rows.append({"N": small, "N_next": large, "D_next_opt": d_large, "loss_target": target,
                     "D_needed": d_small, "tokens_per_param": d_small / small,
                     "train_flops": train_small, "train_flops_next": train_large,
                     "inference_flops_per_token": 2 * small, "inference_flops_per_token_next": 2 * large,
                     "inference_flops_saved_per_token": saved, "inference_saving": 1 - small / large,
                     "breakeven_inference_tokens": max(train_small - train_large, 0.0) / saved
                     if math.isfinite(d_small) else math.inf})
    return rows


# ------------------------------------------------------------------------------------------------- forecast
FORECAST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "forecast.json")
CONVENTION = "N: non-embedding parameters; C = 6 N D FLOPs (attention and the embedding tables not counted)"


@dataclasses.dataclass(frozen=True)
class Runs:
    """Finished, annealed runs: names, N parameters, D tokens, final loss (nats), one entry each."""

    names: list[str]
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray

    @property
    def groups(self) -> list[str]:
        """The unit a bootstrap resamples: the run's size, all its budgets and seeds together (cooldown branches
        of one stable phase are not independent). Measured on the study's design (tests/test_scaling.py):
        resampling (size, seed) groups instead covers the true alpha in only 84% of synthetic studies."""
        return [f"{n:.0f}" for n in self.n]

    def only(self, names: Iterable[str]) -> Runs:
        """The runs named in `names`, or an error naming those the CSV lacks."""
        names = list(names)
        missing = sorted(set(names) - set(self.names))
        if missing:
            raise ValueError(f"the CSV lacks {len(missing)} finished, annealed run(s) the fit needs: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        keep = [self.names.index(name) for name in names]
        return Runs([self.names[i] for i in keep], self.n[keep], self.d[keep], self.loss[keep])

    def fingerprint(self) -> str:
        """sha256 of the sorted (name, N, D, loss) rows: what a forecast was fitted on."""
        import hashlib

        rows = sorted(f"{name},{n:.0f},{d:.0f},{y:.6f}" for name, n, d, y in
                      zip(self.names, self.n, self.d, self.loss, strict=True))
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def final_runs(rows: list[dict[str, str]], loss: str = "loss", params: str = "params",
               tokens: str = "tokens") -> tuple[Runs, list[str]]:
    """final_points with each run's name (`run` column, else `row K`)."""
    n, d, y, notes, names = _final(rows, loss, params, tokens)
    return Runs(names, n, d, y), notes


def seed_noise(runs: Runs) -> float | None:
    """Run-to-run sd of the final loss (nats): pooled over every (N, D) trained with more than one seed; None
    when none was."""
    squares, dof = 0.0, 0
    for key in {(n, d) for n, d in zip(runs.n, runs.d, strict=True)}:
        at = (runs.n == key[0]) & (runs.d == key[1])
        if at.sum() > 1:
            squares += float(((runs.loss[at] - runs.loss[at].mean()) ** 2).sum())
            dof += int(at.sum()) - 1
    return math.sqrt(squares / dof) if dof else None


def make_forecast(runs: Runs, budget: float, sizes: Sequence[float] = (), bootstrap: int = 200, seed: int = 0,
                  noise: float | None = None, commit: str | None = None) -> dict:
    """The pre-registered prediction at compute `budget` (FLOPs, C = 6 N D) from the fit runs: approach 3 by
    variable projection with intervals from resampling whole sizes (Runs.groups); for each of `sizes` (N) the
    predicted final loss at D = C / (6 N) with a 95% prediction interval (the bootstrap's laws plus the seed
    noise, measured from the runs unless `noise` is given), and the predicted N_opt with its interval."""
    c_max = float((6 * runs.n * runs.d).max())
    if budget <= c_max:
        raise ValueError(f"--budget={budget:.3g} is inside the fitted range (the fit runs reach C = 6ND = "
                         f"{c_max:.3g}); a forecast is for a budget above every fit run's")
    fitted = varpro_fit(runs.n, runs.d, runs.loss, runs.groups, bootstrap, seed)
    law, samples = fitted["law"], fitted.get("samples")
    measured = seed_noise(runs)
    sd = noise if noise is not None else (measured or 0.0)
    rng = np.random.default_rng(seed + 1)
    n_opt = float(law.compute_optimal(budget)[0])
    result = {"budget": budget, "convention": CONVENTION, "confidence": 0.95, "N_opt": n_opt,
              "D_opt": budget / (6 * n_opt), "seed_noise": measured, "noise_used": sd, "runs": [],
              "fit": {"method": "variable projection (NNLS for E, A, B; grid over alpha, beta)", **law.to_dict(),
                      "a": law.a, "rss": fitted["rss"], "intervals": fitted.get("intervals"),
                      "bootstrap": bootstrap},
              "inputs": {"runs": runs.names, "fingerprint": runs.fingerprint(), "commit": commit,
                         "largest_fit_budget": c_max}}
    if samples is not None:
        low, high = n_opt_band(samples, np.array([budget]))
        result["N_opt_interval"] = [float(low[0]), float(high[0])]
    for size in sizes:
        d = budget / (6 * size)
        entry = {"N": float(size), "D": d, "loss": float(law.loss(size, d))}
        if samples is not None:
            draws = samples["E"] + samples["A"] / size ** samples["alpha"] + samples["B"] / d ** samples["beta"]
            entry["interval"] = list(_percentiles(draws + rng.normal(0, sd, draws.shape)))
        result["runs"].append(entry)
    return result


def check_forecast(forecast: dict, runs: Runs, tolerance: float = 0.01) -> dict | None:
    """Predicted against observed: each forecast size's finished run at the forecast budget (within 2% of C and
    0.1% of N, as steps round tokens and tables round N) in `runs`; None while none has finished; an error when the fit runs in `runs` are not
    those the forecast was made from (a stale forecast)."""
    fit_runs = runs.only(forecast["inputs"]["runs"])
    if fit_runs.fingerprint() != forecast["inputs"]["fingerprint"]:
        raise ValueError("the forecast is stale: its fit runs' final losses differ from this CSV's (another "
                         "commit's runs?); make a new forecast before training the held-out runs")
    budget, checked = forecast["budget"], []
    c = 6 * runs.n * runs.d
    for entry in forecast["runs"]:
        at = np.flatnonzero((np.abs(c / budget - 1) < 0.02) & (np.abs(runs.n / entry["N"] - 1) < 1e-3))
        if not len(at):
            continue
        observed = float(runs.loss[at].mean())
        error = observed / entry["loss"] - 1
        low, high = entry.get("interval") or (math.nan, math.nan)
        checked.append({**entry, "observed": observed, "runs": [runs.names[i] for i in at], "error": error,
                        "inside": bool(low <= observed <= high), "within_tolerance": abs(error) <= tolerance})
    if not checked:
        return None
    best = min(checked, key=lambda e: e["observed"])
    interval = forecast.get("N_opt_interval")
    return {"budget": budget, "runs": checked, "observed_best_N": best["N"], "predicted_N_opt": forecast["N_opt"],
            "N_opt_interval": interval,
            "best_inside": bool(interval and interval[0] <= best["N"] <= interval[1]), "tolerance": tolerance}


def heldout_refit(forecast: dict, runs: Runs, check: dict, bootstrap: int = 200) -> dict:
    """Post hoc, never a forecast: approach 3 (variable projection) refitted on the forecast's fit runs together
    with the held-out runs `check` found, beside the forecast's own fit, so that a miss can be traced to the
    parameter the held-out runs move (e.g. an irreducible loss E the fit budgets could not pin down), with the
    N_opt the refit gives at the forecast's budget."""
    names = list(forecast["inputs"]["runs"]) + [name for entry in check["runs"] for name in entry["runs"]]
    both = runs.only(names)
    fit = varpro_fit(both.n, both.d, both.loss, both.groups, bootstrap=bootstrap)
    law = fit["law"]
    before = forecast["fit"]
    return {"post_hoc": True, "runs": len(names), "bootstrap": bootstrap,
            "refit": {**{k: getattr(law, k) for k in NAMES}, "a": law.a},
            "refit_intervals": {k: list(v) for k, v in fit.get("intervals", {}).items()},
            "forecast_fit": {k: before[k] for k in (*NAMES, "a")},
            "forecast_intervals": before.get("intervals", {}),
            "refit_N_opt": float(law.compute_optimal(forecast["budget"])[0])}


def format_refit(refit: dict) -> str:
    """heldout_refit as text: each parameter, the forecast's fit against the refit with the held-out runs."""
    def value(name, fit, intervals):
        low, high = intervals.get(name, (math.nan, math.nan))
        return f"{fit[name]:.4g} [{low:.4g}, {high:.4g}]"

    lines = [f"post hoc (not a forecast): approach 3 refitted on the {refit['runs']} fit and held-out runs "
             f"({refit['bootstrap']} resamples), against the forecast's fit"]
    for name in (*NAMES, "a"):
        lines.append(f"  {name:5s} forecast {value(name, refit['forecast_fit'], refit['forecast_intervals'])}"
                     f"  ->  with the held-out runs {value(name, refit['refit'], refit['refit_intervals'])}")
    lines.append(f"  N_opt at the forecast's budget with the held-out runs: {refit['refit_N_opt']:.4g}")
    return "\n".join(lines)


def format_check(check: dict) -> str:
    """check_forecast as text, one line per held-out run."""
    lines = [f"forecast at C={check['budget']:.3g} FLOPs: predicted against observed final loss"]
    for e in check["runs"]:
        low, high = e.get("interval") or (math.nan, math.nan)
        lines.append(f"  N={e['N']:.4g} D={e['D']:.4g}: predicted {e['loss']:.4f} [{low:.4f}, {high:.4f}], observed "
                     f"{e['observed']:.4f} ({e['error']:+.2%}; {'inside' if e['inside'] else 'OUTSIDE'} the interval, "
                     f"{'within' if e['within_tolerance'] else 'beyond'} {check['tolerance']:.0%})")
    interval = check["N_opt_interval"]
    ci = f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
    lines.append(f"  best observed size N={check['observed_best_N']:.4g}; predicted N_opt {check['predicted_N_opt']:.4g}"
                 f"{ci}: {'inside' if check['best_inside'] else 'OUTSIDE'}")
    return "\n".join(lines)


def git_commit() -> str | None:
    """The checkout's commit (None outside a git checkout)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ------------------------------------------------------------------------------------------------------ CSV
def read_csv(path: str) -> list[dict[str, str]]:
    """The rows of a CSV file (local or gs://), as dicts of strings."""
    from etils import epath

    file = epath.Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return read_csv_text(file.read_text())


def read_csv_text(text: str) -> list[dict[str, str]]:
    """The rows of CSV text, as dicts of strings."""
    return list(csv.DictReader(text.splitlines()))


def final_points(rows: list[dict[str, str]], loss: str = "loss", params: str = "params",
                 tokens: str = "tokens") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(N, D, L, notes) for the fit from CSV rows: every row is a run, or, for experiments.collect's table (a
    `run` column), each finished annealed run's last row with a value of `loss`; notes say what was dropped."""
    n, d, y, notes, _ = _final(rows, loss, params, tokens)
    return n, d, y, notes


def _final(rows, loss, params, tokens):
    """(N, D, L, notes, names) of final_points."""
    if not rows:
        raise ValueError("the CSV has no rows")
    missing = [column for column in (params, tokens, loss) if column not in rows[0]]
    if missing:
        raise ValueError(f"the CSV lacks the column(s) {missing}; it has {list(rows[0])}")
    notes = []
    if "run" in rows[0]:
        last: dict[str, dict[str, str]] = {}
        for row in rows:
            if row[loss] in ("", None):
                continue
            if row["run"] not in last or _num(row, tokens) >= _num(last[row["run"]], tokens):
                last[row["run"]] = row
        for flag in ("finished", "annealed"):
            dropped = sorted(run for run, row in last.items() if flag in row and row[flag] != "True")
            if dropped:
                notes.append(f"dropped {len(dropped)} run(s) not {flag}: {', '.join(dropped)}")
            last = {run: row for run, row in last.items() if run not in dropped}
        rows = list(last.values())
    values = np.array([[_num(row, column, i) for column in (params, tokens, loss)] for i, row in enumerate(rows)])
    names = [row.get("run") or f"row {i + 1}" for i, row in enumerate(rows)]
    return values[:, 0], values[:, 1], values[:, 2], notes, names


def _num(row: dict[str, str], column: str, index: int | None = None) -> float:
    """row[column] as a float, or an error naming the row and column."""
    try:
        return float(row[column])
    except (TypeError, ValueError):
        where = f"row {index + 1}" if index is not None else f"run {row.get('run', '?')}"
        raise ValueError(f"{where}: {column}={row[column]!r} is not a number") from None


def format_fit(result: Fit, column: str) -> str:
    """The fit as text: each coefficient with its interval, and the compute-optimal exponents."""
    law = result.law
    lines = [f"L(N, D) = E + A / N^alpha + B / D^beta on {result.runs} runs ({column}); Huber delta {HUBER_DELTA}, "
             f"L-BFGS from {result.starts} starts, objective {result.objective:.4g}"]
    for name in (*NAMES, "a", "b"):
        value = getattr(law, name)
        interval = result.intervals.get(name) if result.intervals else None
        ci = f"   95% CI [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
        label = {"a": "a (N_opt ~ C^a)", "b": "b (D_opt ~ C^b)"}.get(name, name)
        lines.append(f"  {label:16s} {value:.4g}{ci}")
    if result.intervals:
        lines.append(f"  intervals: 2.5-97.5 percentiles of {result.bootstrap} bootstrap resamples of the runs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.scaling", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def table_parser(name: str, help_: str, loss: str = "loss", params: str = "params"):
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--csv", required=True, help="one row per run, or experiments.collect's table")
        sub.add_argument("--loss", default=loss, help="the loss column, e.g. eval/mixture/loss")
        sub.add_argument("--params", default=params, help="the size column, e.g. non_embedding_params")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        return sub

    fit_parser = table_parser("fit", "approach 3 on a CSV of runs (columns params, tokens, loss)")
    fit_parser.add_argument("--bootstrap", type=int, default=200, help="resamples for the intervals (0: none)")
    fit_parser.add_argument("--grid", choices=sorted(GRIDS), default="hoffmann",
                            help="starting points: Hoffmann et al.'s 4500, or a coarse 243")
    fit_parser.add_argument("--varpro", action="store_true", help="also fit by variable projection and compare")
    iso = table_parser("isoflop", "approach 2: IsoFLOP profiles, N_opt(C) and D_opt(C) (columns params, tokens, "
                       "loss, optionally flops)")
    iso.add_argument("--bootstrap", type=int, default=200, help="draws for the intervals (0: none)")
    iso.add_argument("--noise", type=float, help="seed noise in nats for the intervals (default: measured from "
                     "the runs' seeds, else each parabola's residuals)")
    iso.add_argument("--window", type=int, default=5, help="sizes around each budget's minimum the parabola uses")
    iso.add_argument("--sweep-file", "--sweep_file", help="use only the runs the sweep file's fit_runs() names")
    fc = table_parser("forecast", "fit the runs and write the prediction for a larger budget (before it trains)",
                      loss="eval/mixture/loss", params="non_embedding_params")
    fc.add_argument("--budget", type=float, required=True, help="the held-out budget C = 6ND, FLOPs")
    fc.add_argument("--sizes", default="", help="comma-separated N of the held-out runs")
    fc.add_argument("--bootstrap", type=int, default=400, help="resamples of (size, seed) groups")
    fc.add_argument("--noise", type=float, help="seed noise in nats (default: measured from the runs' seeds)")
    fc.add_argument("--sweep-file", "--sweep_file", help="use only the runs the sweep file's fit_runs() names")
    fc.add_argument("--out", default=FORECAST, help="where the forecast is written")
    fc.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ck = table_parser("check-forecast", "the forecast's predictions against the held-out runs' losses",
                      loss="eval/mixture/loss", params="non_embedding_params")
    ck.add_argument("--forecast", default=FORECAST, help="the forecast written before the held-out runs trained")
    ck.add_argument("--refit-bootstrap", "--refit_bootstrap", type=int, default=200,
                    help="also refit approach 3 with the held-out runs (post hoc) on this many resamples; 0: no refit")
    args = cli.parse_args(parser, sys.argv[1:])
    if getattr(args, "bootstrap", 0) < 0:
        raise cli.UsageError(f"--bootstrap={args.bootstrap} must be >= 0")
    rows = read_csv(args.csv)
    runs, notes = final_runs(rows, loss=args.loss, params=args.params)
    check_points(runs.n, runs.d, runs.loss, parameters=1)
    if getattr(args, "sweep_file", None):
        from experiments import sweep

        runs = runs.only(sweep.load(args.sweep_file).fit_runs())
    out = sys.stdout if not args.json else None
    if args.command == "fit":
        result = fit(runs.n, runs.d, runs.loss, bootstrap=args.bootstrap, grid=GRIDS[args.grid])
        payload = {**result.to_dict(), "notes": notes}
        text = format_fit(result, f"{args.params}, tokens, {args.loss}")
        if args.varpro:
            vp = varpro_fit(runs.n, runs.d, runs.loss, runs.groups, args.bootstrap)
            payload["varpro"] = {**vp["law"].to_dict(), "a": vp["law"].a, "intervals": vp.get("intervals")}
            text += "\n" + format_agreement(result, vp)
    elif args.command == "isoflop":
        flops = None
        if "flops" in rows[0] and "run" not in rows[0]:
            flops = np.array([_num(row, "flops", i) for i, row in enumerate(rows)])
        elif "run" in rows[0]:
            flops = 6 * runs.n * runs.d  # a grid's runs: their nominal budget, 6ND to two digits
        noise = args.noise if args.noise is not None else seed_noise(runs)
        payload = isoflop(runs.n, runs.d, runs.loss, flops=flops, window=args.window, noise=noise,
                          bootstrap=args.bootstrap)
        payload["noise"] = noise  # None: each parabola's residual sd
        if not payload["profiles"]:
            raise ValueError("no budget of the CSV has runs at 3 or more sizes: an IsoFLOP profile needs at least "
                             "3 sizes at one budget")
        payload["notes"] = notes
        text = format_isoflop(payload)
    elif args.command == "forecast":
        from etils import epath

        target = epath.Path(args.out)
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{args.out} exists (a forecast is written once, before its runs train); "
                                  "pass --overwrite to replace it, or choose another --out")
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()] if args.sizes else []
        if any(s <= 0 for s in sizes):
            raise cli.UsageError(f"--sizes={args.sizes} must be positive parameter counts")
        payload = make_forecast(runs, args.budget, sizes, args.bootstrap, noise=args.noise, commit=git_commit())
        payload["inputs"]["csv"] = args.csv
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(payload, indent=1))
        text = format_forecast(payload) + f"\nwritten to {args.out}"
    else:
        from etils import epath

        path = epath.Path(args.forecast)
        if not path.exists():
            raise FileNotFoundError(f"{args.forecast} does not exist: write the forecast (experiments.scaling "
                                    "forecast) before training the held-out runs")
        forecast = json.loads(path.read_text())
        payload = check_forecast(forecast, runs)
        if payload is None:
            raise ValueError(f"no finished run at the forecast budget C={forecast['budget']:.3g} and its sizes "
                             f"{[e['N'] for e in forecast['runs']]} in {args.csv}; train the held-out runs first")
        text = format_check(payload)
        if args.refit_bootstrap:
            payload["refit"] = heldout_refit(forecast, runs, payload, bootstrap=args.refit_bootstrap)
            text += "\n" + format_refit(payload["refit"])
    if out is None:
        print(json.dumps(payload, default=_jsonable))
        return
    for note in notes:
        print(note)
    print(text)


def _jsonable(value):
    """JSON for numpy values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return float(value)


def format_forecast(forecast: dict) -> str:
    """The forecast as text: N_opt with interval, then each held-out run's predicted loss and interval."""
    interval = forecast.get("N_opt_interval")
    ci = f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
    noise = forecast["seed_noise"]
    lines = [f"forecast at C={forecast['budget']:.3g} FLOPs ({CONVENTION}) from {len(forecast['inputs']['runs'])} "
             f"runs up to C={forecast['inputs']['largest_fit_budget']:.3g}: N_opt {forecast['N_opt']:.4g}{ci}, "
             f"seed noise {'not measured' if noise is None else f'{noise:.4f} nats'}"]
    for e in forecast["runs"]:
        low, high = e.get("interval") or (math.nan, math.nan)
        lines.append(f"  N={e['N']:.4g} D={e['D']:.4g}: loss {e['loss']:.4f}, 95% prediction interval "
                     f"[{low:.4f}, {high:.4f}]")
    return "\n".join(lines)


def format_agreement(huber: Fit, vp: dict) -> str:
    """Approach 3 two ways (Huber/L-BFGS on log loss, variable projection on loss), side by side."""
    lines = ["approach 3 two ways: Huber/L-BFGS (log loss) | variable projection (NNLS, loss)"]
    for name in ("E", "alpha", "beta", "a"):
        value = getattr(vp["law"], name)
        interval = (vp.get("intervals") or {}).get(name)
        ci = f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
        lines.append(f"  {name:6s} {getattr(huber.law, name):.4g} | {value:.4g}{ci}")
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
