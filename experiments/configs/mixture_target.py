"""The mixture study's check at a larger size (`make mixture`, README "Mixture laws"): the target runs that test
the swarm's predicted optimum (experiments/configs/mixture_swarm.py, experiments.mixing).

    python -m experiments.sweep --config=experiments/configs/mixture_target.py --dry-run
    python -m llama_jax.train --config=experiments/configs/mixture_target.py:size=d40l2,tokens=4e6,table1 --workdir=...

Design:
- Size d40l2 (39.9k non-embedding parameters, 11.8x the d16l1 proxies), TARGET_TOKENS = 4M tokens (100 per
  parameter), every source at its full size (the proxies keep a quarter: the same repetition), two seeds of each
  mixture (SEEDS), training and evaluation as the swarm's but with held-out losses every EVAL_EVERY steps (the
  loss curves).
- Mixtures: the predicted optimum (`optimum`: OPTIMUM, written once by `experiments.mixing optimize`), Table 1,
  uniform-by-tokens (the baselines any mixture law must beat), and three swarm mixtures (`mix=K`) at the 10th,
  50th and 90th percentiles of the proxies' objective (from SWARM_CSV), so the proxy-target rank correlation
  spans the range the proxies saw. Until the swarm is collected and optimised only the baselines are listed.
- Table 1 also trains 1.5x and 2x the tokens, as cooldown branches of one stable phase (as in cpu_isoflop.py:
  each equals the run from scratch with that schedule), so the extra tokens Table 1 needs to reach the optimum's
  loss are read off annealed runs, the paper's currency ("matched the default trained 48% longer", Ye et al.).
- The optimum is also trained at the proxy size (`size=d16l1,optimum`), so that the rank correlation includes it.
- Cost: estimated_seconds(), about 76 minutes on the idle box (mixture_swarm.run_seconds).
"""

import json
import os

import numpy as np

from experiments import mixing, spec
from experiments.configs import mixture_swarm as swarm

SIZES = swarm.SIZES
TARGET, PROXY, TARGET_TOKENS, PROXY_TOKENS = swarm.TARGET, swarm.PROXY, swarm.TARGET_TOKENS, swarm.PROXY_TOKENS
SEEDS = (0, 1)
LONGER = (1.5, 2.0)  # Table 1's extra budgets, times TARGET_TOKENS
EVAL_EVERY = 250
SPAN = (0.1, 0.5, 0.9)
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
OPTIMUM = os.path.join(RESULTS, "mixture_optimum.json")
SWARM_CSV = os.path.join(RESULTS, "mixture_swarm.csv")
UNIQUE_TOKENS, MAX_EPOCHS, FLOOR = swarm.UNIQUE_TOKENS, swarm.MAX_EPOCHS, swarm.FLOOR


def optimum(path: str | None = None) -> np.ndarray | None:
    """The predicted optimum's weights from OPTIMUM (None until `experiments.mixing optimize` wrote it)."""
    path = path or OPTIMUM
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return mixing.check_weights(json.load(f)["weights"], where=path)


def spanning(csv: str | None = None) -> list[int]:
    """The swarm draws K (mix=K) whose proxies' final objective (the equal-weight mean held-out loss) is nearest
    the SPAN percentiles over the swarm's draws in SWARM_CSV ([] until it holds them)."""
    csv = csv or SWARM_CSV
    if not os.path.exists(csv):
        return []
    runs, _ = mixing.read_runs(mixing.read_csv(csv))
    prefix = f"{PROXY}_{spec.format_tokens(PROXY_TOKENS)}_mix"
    draws = [(int(name[len(prefix):]), v) for name, v in zip(runs.names, runs.objective.combine(runs.values),
                                                             strict=True) if name.startswith(prefix)]
    if len(draws) < len(SPAN):
        return []
    values = np.array([v for _, v in draws])
    picks = []
    for q in SPAN:
        order = np.argsort(np.abs(values - np.quantile(values, q)))
        picks.append(next(draws[i][0] for i in order if draws[i][0] not in picks))
    return picks


def get_config(arg: str | None = None):
    """The target run `arg` names; by default Table 1's at the target size."""
    arg = arg or f"size={TARGET},tokens={TARGET_TOKENS:g},table1"
    s = spec.parse(arg, sizes=SIZES, knobs=("mix", "seed"), flags=(*swarm.FLAGS, "optimum", "stable"))
    extra = {}
    if "optimum" in s.flags:
        weights = optimum()
        if weights is None:
            raise ValueError(f"spec {arg!r}: {OPTIMUM} does not exist yet; fit the swarm and write it first "
                             "(make mixture, or python -m experiments.mixing optimize --out=...)")
        extra["optimum"] = weights
    c = swarm.run_config(s, swarm.mixture_of(s, arg, extra), eval_every=EVAL_EVERY)
    if "stable" in s.flags:  # Table 1's stable phase keeps the checkpoints its budgets' cooldowns branch from
        c.checkpoint.keep_steps = tuple(cooldown_starts())
    c.lock()
    return c


def budgets() -> list[float]:
    """Table 1's target budgets: TARGET_TOKENS and LONGER times it."""
    return [TARGET_TOKENS] + [f * TARGET_TOKENS for f in LONGER]


def cooldown_starts() -> list[int]:
    steps = [spec.steps_for(b, swarm.BATCH, swarm.SEQ_LEN) for b in budgets()]
    return [n - round(swarm.COOLDOWN * n) for n in steps]


def sweep() -> list[str]:
    """Per seed: Table 1's stable phase and its three budgets, uniform-by-tokens, then (once the swarm is fitted)
    the optimum and the three spanning draws; the optimum at the proxy size last."""
    runs = []
    trunk = max(cooldown_starts()) * swarm.BATCH * swarm.SEQ_LEN
    mixes = ([",optimum"] if optimum() is not None else []) + [f",mix={k}" for k in spanning()]
    for seed in SEEDS:
        knob = f",seed={seed}" if seed else ""
        runs.append(f"size={TARGET},tokens={trunk},table1{knob},stable")
        runs += [f"size={TARGET},tokens={b:g},table1{knob}" for b in budgets()]
        runs += [f"size={TARGET},tokens={TARGET_TOKENS:g}{m}{knob}" for m in (",uniform", *mixes)]
    if optimum() is not None:
        runs.append(f"size={PROXY},tokens={PROXY_TOKENS:g},optimum")
    return runs


def estimated_seconds() -> float:
    """Estimated idle-box seconds of the whole target set (the optimum and three draws counted even before they
    are listed): branches train only their cooldown."""
    evals = round(spec.steps_for(TARGET_TOKENS, swarm.BATCH, swarm.SEQ_LEN) / EVAL_EVERY) + 1
    trunk = max(cooldown_starts()) * swarm.BATCH * swarm.SEQ_LEN
    per_seed = swarm.run_seconds(TARGET, trunk, evals=round(evals * 1.6))
    per_seed += sum(swarm.run_seconds(TARGET, b, trained=swarm.COOLDOWN * b, evals=1) for b in budgets())
    per_seed += (2 + len(SPAN)) * swarm.run_seconds(TARGET, TARGET_TOKENS, evals=evals)
    return len(SEEDS) * per_seed + swarm.run_seconds(PROXY, PROXY_TOKENS)


def data_tokens(config) -> dict[str, float]:
    """As the swarm's: the tokens each source holds for a run of `config`."""
    return swarm.data_tokens(config)

