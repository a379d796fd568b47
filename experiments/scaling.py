"""Scaling-law fits (Hoffmann et al. 2022, "Chinchilla"), in one tested module: notebooks and the command only call it.

    python -m experiments.scaling fit --csv=results.csv [--json] [--loss=loss] [--params=params] [--bootstrap=200]

- Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. did: the Huber loss (delta 1e-3)
  of log L against log-sum-exp(a - alpha log N, b - beta log D, e) (A = e^a, B = e^b, E = e^e), minimised with
  L-BFGS from every point of their grid of starts (a, b in 0..25, e in -1..1, alpha, beta in 0..2), all starts at
  once (`jax.vmap` over optax's L-BFGS); intervals from refitting bootstrap resamples of the runs.
- Approach 2: IsoFLOP profiles (loss against log N at fixed compute, a parabola each), then N_opt and D_opt
  against C as power laws.
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
            min_sizes: int = 3) -> dict:
    """Approach 2 on a grid of runs: for each size, loss interpolated in log C (C = 6 N D) between its runs; at
    each budget covered by at least `min_sizes` sizes, a parabola of loss against log N gives N_opt; then power
    laws N_opt = k_N C^a and D_opt = C / (6 N_opt) = k_D C^b. Budgets default to 12 log-spaced values across
    the range of C that at least `min_sizes` sizes cover."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    c = 6 * n * d
    sizes = np.unique(n)
    if budgets is None:
        grid = np.geomspace(c.min(), c.max(), 200)
        covered = [g for g in grid if sum(c[n == s].min() <= g <= c[n == s].max() for s in sizes) >= min_sizes]
        budgets = np.geomspace(covered[0], covered[-1], 12) if covered else []
    profiles = []
    for budget in budgets:
        xs, ys = [], []
        for s in sizes:
            order = np.argsort(c[n == s])
            cs, ls = c[n == s][order], loss[n == s][order]
            if len(cs) >= 2 and cs[0] <= budget <= cs[-1]:
                xs.append(math.log(s))
                ys.append(float(np.interp(math.log(budget), np.log(cs), ls)))
        if len(xs) < min_sizes:
            continue
        p2, p1, p0 = np.polyfit(xs, ys, 2)
        if p2 <= 0:
            continue  # no minimum: the budget's profile is monotone over the sizes run
        x_opt = -p1 / (2 * p2)
        if not min(xs) <= x_opt <= max(xs):
            continue  # the minimum lies outside the sizes run: an extrapolation, not a measurement
        profiles.append({"C": float(budget), "N_opt": math.exp(x_opt), "D_opt": budget / (6 * math.exp(x_opt)),
                         "loss_opt": float(p0 + p1 * x_opt + p2 * x_opt**2), "sizes": len(xs),
                         "parabola": [float(p0), float(p1), float(p2)], "log_n": xs, "loss": ys})
    result = {"profiles": profiles}
    if len(profiles) >= 2:
        log_c = np.log([p["C"] for p in profiles])
        a, log_kn = np.polyfit(log_c, np.log([p["N_opt"] for p in profiles]), 1)
        b, log_kd = np.polyfit(log_c, np.log([p["D_opt"] for p in profiles]), 1)
        result.update({"a": float(a), "b": float(b), "k_N": math.exp(log_kn), "k_D": math.exp(log_kd)})
    return result


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
    return values[:, 0], values[:, 1], values[:, 2], notes


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
    fit_parser = commands.add_parser("fit", help="approach 3 on a CSV of runs (columns params, tokens, loss)")
    fit_parser.add_argument("--csv", required=True, help="one row per run, or experiments.collect's table")
    fit_parser.add_argument("--loss", default="loss", help="the loss column, e.g. eval/commoncrawl/loss")
    fit_parser.add_argument("--params", default="params", help="the size column, e.g. non_embedding_params")
    fit_parser.add_argument("--bootstrap", type=int, default=200, help="resamples for the intervals (0: none)")
    fit_parser.add_argument("--grid", choices=sorted(GRIDS), default="hoffmann",
                            help="starting points: Hoffmann et al.'s 4500, or a coarse 243")
    fit_parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = cli.parse_args(parser, sys.argv[1:])
    if args.bootstrap < 0:
        raise cli.UsageError(f"--bootstrap={args.bootstrap} must be >= 0")
    n, d, loss, notes = final_points(read_csv(args.csv), loss=args.loss, params=args.params)
    result = fit(n, d, loss, bootstrap=args.bootstrap, grid=GRIDS[args.grid])
    if args.json:
        print(json.dumps({**result.to_dict(), "notes": notes}))
        return
    for note in notes:
        print(note)
    print(format_fit(result, f"{args.params}, tokens, {args.loss}"))


if __name__ == "__main__":
    cli.run(main)
