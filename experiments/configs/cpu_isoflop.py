"""The CPU scaling study as an IsoFLOP grid with a pre-registered forecast (`make scaling`): four fit budgets of
5-6 LLaMA shapes each, N = 3.4k to 151k non-embedding parameters (45x), every size at its own learning rate
from a 3-rate sweep, a second seed at every size of one budget, and three held-out runs at 10x the largest fit
budget that the fit predicts before they train.

    python -m experiments.sweep --config=experiments/configs/cpu_isoflop.py --dry-run
    python -m llama_jax.train --config=experiments/configs/cpu_isoflop.py:size=d32l2,tokens=3.1e5 --workdir=...

Design (each choice is measured or cited):
- Counting: N is non-embedding parameters and C = 6 N D (scaling.CONVENTION), in the design, the fits and the
  forecast. A budget's run of size N trains D = C / (6N) tokens (rounded to whole 32 x 128 steps).
- Budgets and sizes: centred on the committed fit of cpu_sweep.py (experiments/results/fits.json, approach 3
  on non_embedding_params and eval/mixture/loss: N_opt = 0.110 (C/6)^0.49, i.e. 8.1k, 14k, 22k and 35k
  parameters at C = 5e10, 1.5e11, 4e11, 1e12). Each budget's sizes bracket that optimum by at least 2x on each
  side (tests/test_scaling.py checks it against fits.json), so that its minimum is measured, not extrapolated;
  that fit's a is uncertain ([0.25, 0.87]), which is why the brackets are wide. Going below d32l2 is cheap:
  d16l1 is a 1-layer, 16-wide LLaMA.
- Held out: C = 1e13, 10x the largest fit budget, at the size nearest the grid's own forecast of N_opt there
  (experiments/results/forecast.json: 310k, 95% interval 129k-508k; d80l4, 318k) and one size each side (d64l3,
  d96l4), trained only held out (at their middle candidate rate). The prior fit had put N_opt at 101k; the
  held-out sizes follow the grid's forecast, which `experiments.scaling forecast` wrote before they train.
- Learning rate per size, from data: peak rates 2e-3 x sqrt(256 / dim) x {0.5, 1, 2} (cpu_sweep.py's rule and
  a factor 2 each way; Porian et al. 2024: untuned rates move the N_opt exponent) at the size's smallest fit
  budget; chosen_lr() reads the lowest final eval/mixture/loss of the three from the collected results
  (experiments/results/cpu_isoflop.csv). Until that CSV holds a size's three rate runs, its grid runs are listed
  at the middle rate (so that the dry run shows the whole study); `make scaling` trains and collects the rate
  sweep first, so no grid run trains before its rate is chosen, and fit_runs() refuses to name runs then.
- Schedule: warmup-stable-decay as in cpu_sweep.py (Hägele et al. 2024): the rate sweep's runs train from
  scratch; then one stable phase per size at its chosen rate, each of its other budgets a cooldown branch of
  the last 20% with a (1 - sqrt) decay to 0; batch 32 x 128, AdamW beta2 0.99,
  warmup of N tokens, weight decay 0.1, clipping 1.0 (the cpu_sweep docstring gives the reasons).
- Noise: seed noise from a second seed at every size of the 5e10 budget (5 sizes); held-out loss of every
  source on 16 batches of 32 x 128 tokens (65k tokens per source, 4x cpu_sweep.py's), logged with its
  standard error over the batches (eval/<source>/loss_se, eval/mixture/loss_se) so that eval noise is
  measured against seed noise, every 500 steps and at the end.
- Cost: estimated_seconds() from the speeds cpu_sweep.py's runs measured on the idle 2-core box (d32l2
  23k tokens/s, d48l2 16.6k, d64l3 11.6k, d80l4 6.8k) and conservative guesses for the sizes it did not run
  (TOKENS_PER_S; smaller sizes barely faster, as per-step overheads dominate there), times 1.15 for
  evaluations, compiles and process starts: about 2.5 hours, an estimate to be measured on the idle box.
"""

import math
import os

from experiments import isoflop, spec
from experiments import study_tokenizer as tokenizer
from experiments.configs.common import cpu_study_config
from llama_jax import corpus_spec

# dim, layers (dim // 16 heads, SwiGLU hidden a multiple of 16).
SIZES = {"d16l1": (16, 1), "d16l2": (16, 2), "d20l2": (20, 2), "d24l2": (24, 2), "d32l2": (32, 2),
         "d40l2": (40, 2), "d48l2": (48, 2), "d64l2": (64, 2), "d64l3": (64, 3), "d80l4": (80, 4), "d96l4": (96, 4)}
NON_EMBEDDING = {"d16l1": 3_376, "d16l2": 6_736, "d20l2": 10_980, "d24l2": 13_944, "d32l2": 26_784,
                 "d40l2": 39_880, "d48l2": 55_536, "d64l2": 100_672, "d64l3": 150_976, "d80l4": 318_160,
                 "d96l4": 443_232}  # asserted in the tests
# Fit budgets (C = 6ND FLOPs) and their sizes, centred on fits.json's N_opt (module docstring).
FIT_BUDGETS = {5e10: ("d16l1", "d16l2", "d20l2", "d24l2", "d32l2"),
               1.5e11: ("d16l2", "d20l2", "d24l2", "d32l2", "d40l2"),
               4e11: ("d20l2", "d24l2", "d32l2", "d40l2", "d48l2"),
               1e12: ("d24l2", "d32l2", "d40l2", "d48l2", "d64l2", "d64l3")}
HELDOUT_BUDGET = 1e13
# The grid's forecast of N_opt at HELDOUT_BUDGET (experiments/results/forecast.json: 310k) and one size each side.
HELDOUT_SIZES = ("d64l3", "d80l4", "d96l4")
SEED_BUDGET = 5e10  # every size of this budget also trains with seed 1
LR_FACTORS = (0.5, 1.0, 2.0)  # times the rule 2e-3 x sqrt(256 / dim)
# Training tokens per second on the idle 2-core box: measured (d32l2, d48l2, d64l3) or a conservative guess.
TOKENS_PER_S = {"d16l1": 30e3, "d16l2": 28e3, "d20l2": 27e3, "d24l2": 25e3, "d32l2": 23e3, "d40l2": 19.5e3,
                "d48l2": 16.6e3, "d64l2": 13e3, "d64l3": 11.6e3, "d80l4": 6.8e3, "d96l4": 5e3}
OVERHEAD = 1.15  # evaluations, compiles and process starts, on top of training
BATCH, SEQ_LEN, VOCAB = 32, 128, 2048
COOLDOWN = 0.2
TOKENIZER = os.path.join(os.path.dirname(corpus_spec.DEFAULT_CORPUS), "study", f"tokenizer_{VOCAB}.model")
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "cpu_isoflop.csv")
LOSS = "eval/mixture/loss"


def design() -> isoflop.Design:
    """The study as an `experiments.isoflop.Design`, its rates read from RESULTS."""
    return isoflop.Design(non_embedding=NON_EMBEDDING, fit_budgets=FIT_BUDGETS, heldout_budget=HELDOUT_BUDGET,
                          heldout_sizes=HELDOUT_SIZES, seed_budget=SEED_BUDGET, lr_candidates=lr_candidates,
                          tokens_per_step=BATCH * SEQ_LEN, cooldown=COOLDOWN, results=RESULTS, loss=LOSS)


def tokens(budget: float, size: str) -> float:
    return design().tokens(budget, size)


def lr_candidates(size: str) -> tuple[float, ...]:
    """The size's three peak learning rates."""
    return tuple(round(f * 2e-3 * math.sqrt(256 / SIZES[size][0]), 6) for f in LR_FACTORS)


def lr_budget(size: str) -> float:
    return design().lr_budget(size)


def chosen_lr(size: str, results: str | None = None) -> float | None:
    return design().chosen_lr(size, results)


def get_config(arg: str | None = None):
    """The run `arg` names; by default the rate sweep's middle rate for d32l2, a run of the study whose rate
    is given, not chosen, so the default works before any result is collected."""
    arg = arg or f"size=d32l2,tokens={tokens(lr_budget('d32l2'), 'd32l2'):g},lr={lr_candidates('d32l2')[1]}"
    s = spec.parse(arg, sizes=SIZES, knobs=("seed", "lr"), flags=("stable", "heldout"))
    lr = s.knob("lr", 0) or chosen_lr(s.size)
    if not lr:
        raise ValueError(f"spec {arg!r}: no lr= and no learning-rate sweep result for {s.size} in {RESULTS}; "
                         "give lr= or train and collect the rate sweep first (make scaling)")
    dim, layers = SIZES[s.size]
    c = cpu_study_config(dim, layers, NON_EMBEDDING[s.size], s.tokens, lr, vocab_size=VOCAB, seq_len=SEQ_LEN,
                         batch=BATCH, tokenizer=TOKENIZER, cooldown=COOLDOWN, stable="stable" in s.flags,
                         seed=int(s.knob("seed", 0)))
    c.train.eval_every, c.train.eval_batches = 500, 16
    if "stable" in s.flags:  # the stable phase keeps the checkpoints its budgets' cooldowns branch from
        c.checkpoint.keep_steps = tuple(step for step in cooldown_starts(s.size) if step <= c.train.steps)
    c.lock()
    return c


def branched_budgets(size: str) -> list[float]:
    return design().branched_budgets(size)


def cooldown_starts(size: str) -> list[int]:
    return design().cooldown_starts(size)


def rate(size: str) -> float:
    return design().rate(size)


def sweep() -> list[str]:
    return design().sweep()


def only(stage: str) -> str:
    """A regular expression for `experiments.sweep --only` naming the runs of `stage` (lr, grid or heldout),
    the stages `make scaling` trains one after another."""
    return design().only(stage)


def forecast_args() -> str:
    return design().forecast_args()


def fit_runs() -> list[str]:
    return design().fit_runs()


def estimated_seconds() -> dict[str, float]:
    """Estimated idle-box wall time of each stage (seconds): the tokens each run trains itself over its size's
    TOKENS_PER_S, times OVERHEAD."""
    d, totals = design(), {}
    stages = d.specs()
    for stage, args in stages.items():
        seconds = 0.0
        for arg in args:
            s = spec.parse(arg, knobs=None, flags=None)
            seconds += d.run_tokens(stage, arg, stages["lr"]) / TOKENS_PER_S[s.size]
        totals[stage] = OVERHEAD * seconds
    return totals


def data_tokens(config) -> dict[str, float]:
    """Training tokens of each source of the bundled corpus under the study's tokenizer ({} before it is built)."""
    corpus = corpus_spec.corpus_dir(config.data)
    if not (os.path.exists(config.data.tokenizer) and os.path.exists(os.path.join(corpus, "manifest.json"))):
        return {}
    return tokenizer.corpus_tokens(corpus, config.data.tokenizer)
