"""An IsoFLOP study as data: fit budgets with the sizes trained at each, a learning-rate sweep per size, a
second seed at one budget, and held-out runs at a budget 10x above the fit's, which a forecast predicts before
they train (Hoffmann et al. 2022, approach 2 and 3; Porian et al. 2024 for the per-size rates).

One `Design` holds the facts; the experiment files (`experiments/configs/cpu_isoflop.py` on 2 CPU cores,
`experiments/configs/paper_isoflop.py` on a TPU pod) declare theirs and delegate every derived list to it, so
the two studies follow one protocol:

    lr       each size's candidate peak rates, at the size's smallest fit budget, trained from scratch
    grid     at each fit budget, each of its sizes at its chosen rate: one warmup-stable run per size, each of
             its other budgets a cooldown branch of the last `cooldown` of that budget's steps (Hägele et al.
             2024); plus a second seed of every size at `seed_budget`
    heldout  `heldout_sizes` at `heldout_budget`, trained only after `experiments.scaling forecast` wrote its
             prediction

Counting: N is non-embedding parameters and C = 6 N D (`experiments.scaling.CONVENTION`); a budget's run of
size N trains D = C / (6N) tokens, to three significant digits, rounded to whole steps by the config.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Mapping

from experiments import spec

STAGES = ("lr", "grid", "heldout")


@dataclasses.dataclass(frozen=True)
class Design:
    non_embedding: Mapping[str, int]  # size name -> non-embedding parameters, in size order (small to large)
    fit_budgets: Mapping[float, tuple[str, ...]]  # C = 6ND -> the sizes trained at it
    heldout_budget: float
    heldout_sizes: tuple[str, ...]
    seed_budget: float  # every size of this fit budget also trains with seed 1
    lr_candidates: Callable[[str], tuple[float, ...]]  # the size's peak rates; the middle one is the default
    tokens_per_step: int
    cooldown: float  # the fraction of a budget's steps its cooldown branch decays over
    results: str  # the collected table (experiments.collect) the chosen rates are read from
    loss: str = "eval/mixture/loss"  # the column the rates are chosen by, as the fits use it

    def __post_init__(self):
        unknown = sorted({s for sizes in self.fit_budgets.values() for s in sizes} - set(self.non_embedding)
                         | set(self.heldout_sizes) - set(self.non_embedding))
        if unknown:
            raise ValueError(f"IsoFLOP design names sizes it does not define: {unknown}")
        if self.seed_budget not in self.fit_budgets:
            raise ValueError(f"seed_budget {self.seed_budget:g} is not a fit budget ({sorted(self.fit_budgets)})")
        if self.heldout_budget <= max(self.fit_budgets):
            raise ValueError(f"heldout_budget {self.heldout_budget:g} must lie above every fit budget "
                             f"(largest {max(self.fit_budgets):g}): a forecast extrapolates")

    # ------------------------------------------------------------------------------------- one run's facts
    @property
    def fit_sizes(self) -> list[str]:
        """The sizes trained at some fit budget, in size order: each gets a rate sweep. A size trained only
        held out (above the grid, where a rate sweep would cost as much as the study) takes its middle
        candidate, the transfer rule that the sweeps of the fit sizes test."""
        return [s for s in self.non_embedding if any(s in sizes for sizes in self.fit_budgets.values())]

    def tokens(self, budget: float, size: str) -> float:
        """D = C / (6N) for the size at the budget, to three significant digits."""
        return float(f"{budget / (6 * self.non_embedding[size]):.3g}")

    def steps(self, tokens: float) -> int:
        return spec.steps_for(tokens, self.tokens_per_step, 1)

    def lr_budget(self, size: str) -> float:
        """The budget the size's learning rates are compared at: its smallest fit budget."""
        return min(budget for budget, sizes in self.fit_budgets.items() if size in sizes)

    def lr_run(self, size: str, lr: float) -> str:
        return f"size={size},tokens={self.tokens(self.lr_budget(size), size):g},lr={lr}"

    def chosen_lr(self, size: str, results: str | None = None) -> float | None:
        """The rate of the size's rate-sweep run with the lowest final `loss` in the collected `results`
        (default self.results), or None until all its candidates have finished there."""
        results = results or self.results
        if size not in self.fit_sizes or not os.path.exists(results):
            return None
        with open(results) as file:
            rows = list(csv.DictReader(file))
        names = {spec.parse(self.lr_run(size, lr), knobs=None).name: lr for lr in self.lr_candidates(size)}
        final: dict[float, tuple[int, float]] = {}
        for row in rows:
            if row["run"] in names and row.get(self.loss) and row.get("finished") == "True":
                lr, step = names[row["run"]], int(row["step"])
                if lr not in final or step >= final[lr][0]:
                    final[lr] = (step, float(row[self.loss]))
        if len(final) < len(names):
            return None
        return min(final, key=lambda lr: final[lr][1])

    def rate(self, size: str) -> float:
        """The size's chosen rate, or the middle candidate until the rate sweep's results are collected."""
        candidates = self.lr_candidates(size)
        return self.chosen_lr(size) or candidates[len(candidates) // 2]

    def branched_budgets(self, size: str) -> list[float]:
        """The size's fit budgets that branch from its stable phase: all but its rate-sweep budget, whose run at
        the chosen rate is the rate sweep's own (trained from scratch, before any stable phase exists)."""
        return [b for b, sizes in self.fit_budgets.items() if size in sizes and b != self.lr_budget(size)]

    def cooldown_starts(self, size: str) -> list[int]:
        """Steps where the size's branched budgets leave the stable phase: where their branches start."""
        starts = []
        for budget in self.branched_budgets(size):
            steps = self.steps(self.tokens(budget, size))
            starts.append(steps - round(self.cooldown * steps))
        return starts

    # --------------------------------------------------------------------------------- the study's runs
    def specs(self) -> dict[str, list[str]]:
        """The study's run specs by stage: the rate sweep, the fit grid (stable phases, branches, second
        seeds), the held-out runs."""
        stages: dict[str, list[str]] = {stage: [] for stage in STAGES}
        for size in self.fit_sizes:
            stages["lr"] += [self.lr_run(size, lr) for lr in self.lr_candidates(size)]
        for size in self.fit_sizes:
            rate = self.rate(size)
            stages["grid"].append(self.lr_run(size, rate))
            if self.branched_budgets(size):
                trunk = max(self.cooldown_starts(size)) * self.tokens_per_step
                stages["grid"].append(f"size={size},tokens={trunk},lr={rate},stable")
                stages["grid"] += [f"size={size},tokens={self.tokens(b, size):g},lr={rate}"
                                   for b in self.branched_budgets(size)]
        stages["grid"] += [f"size={size},tokens={self.tokens(self.seed_budget, size):g},lr={self.rate(size)},seed=1"
                           for size in self.fit_budgets[self.seed_budget]]
        stages["heldout"] = [f"size={size},tokens={self.tokens(self.heldout_budget, size):g},"
                             f"lr={self.rate(size)},heldout" for size in self.heldout_sizes]
        return stages

    def sweep(self) -> list[str]:
        """The rate sweep, then the fit grid, then the held-out runs; a grid run that is also a rate-sweep run
        (the chosen rate at the size's sweep budget) is listed once."""
        runs: list[str] = []
        for stage in self.specs().values():
            runs += [arg for arg in stage if arg not in runs]
        return runs

    def only(self, stage: str) -> str:
        """A regular expression for `experiments.sweep --only` that names exactly the runs of `stage`."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
        names = [spec.parse(arg, knobs=None, flags=None).name for arg in self.specs()[stage]]
        return "^(" + "|".join(name.replace(".", r"\.") for name in names) + ")$"

    def forecast_args(self) -> str:
        """The flags of `experiments.scaling forecast` for the held-out runs: --budget=C --sizes=N,..."""
        sizes = ",".join(str(self.non_embedding[s]) for s in self.heldout_sizes)
        return f"--budget={self.heldout_budget:g} --sizes={sizes}"

    def fit_runs(self) -> list[str]:
        """Names of the runs the fits and the forecast use: the grid's annealed runs at the chosen rates."""
        missing = [size for size in self.fit_sizes if self.chosen_lr(size) is None]
        if missing:
            raise ValueError(f"no learning rate chosen yet for {missing}: {self.results} lacks their finished "
                             "rate-sweep runs; train and collect them first")
        return [spec.parse(arg, knobs=None, flags=None).name for arg in self.specs()["grid"]
                if not arg.endswith(",stable")]

    def run_tokens(self, stage: str, arg: str, lr_runs: list[str]) -> float:
        """Tokens the run `arg` of `stage` trains itself: a cooldown branch only its cooldown, a grid run that is
        also a rate-sweep run (one of `lr_runs`, specs()["lr"]) none: it trained once, in the rate sweep."""
        s = spec.parse(arg, knobs=None, flags=None)
        if stage == "grid" and arg in lr_runs:
            return 0.0
        trained = self.steps(s.tokens) * self.tokens_per_step
        is_branch = stage == "grid" and "stable" not in s.flags and s.knob("seed", 0) == 0
        return (self.cooldown if is_branch else 1.0) * trained
