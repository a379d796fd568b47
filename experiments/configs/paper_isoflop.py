"""The IsoFLOP study at the paper's scale, for a TPU pod: the CPU study's protocol (`experiments/isoflop.py`:
rate sweep, IsoFLOP grid with WSD cooldown branches, second seeds, a forecast written before the held-out runs
train) on LLaMA-shaped models of 85M to 3.6B non-embedding parameters (42x) at four fit budgets from 1e19 to
3e20 FLOPs, held out at 3e21 (10x) up to a 6.4B model (the 7B's shape, §2.2 and Table 2).

    python -m experiments.sweep --config=experiments/configs/paper_isoflop.py --dry-run --topology=v5p-128
    python -m experiments.sweep --config=experiments/configs/paper_isoflop.py --launch=tpu --topology=v5p-128 \\
        --tpu=NAME --zone=ZONE --workdir=gs://BUCKET --only="$(python -c 'from experiments.configs import \\
        paper_isoflop; print(paper_isoflop.only("lr"))')" [--execute]      # then "grid", forecast, "heldout"

Design:
- Counting as in the CPU study: N non-embedding parameters, C = 6 N D.
- Centres: Chinchilla's own approach-3 law (Hoffmann et al. 2022, eq. 10: E 1.69, A 406.4, B 410.7, alpha
  0.34, beta 0.28; CHINCHILLA below), the published prior at this scale: N_opt = 228M, 374M, 645M and 1.06B at the
  four fit budgets. Each budget's five sizes bracket that optimum by at least 2x each side (tests check it).
- Held out: C = 3e21, where that law puts N_opt at 3.0B: the nearest size (d3072l32, 3.6B) and one each side
  (d2560l28, d4096l32). d4096l32 trains only held out; its rate follows the transfer rule below, untested by its
  own sweep (a sweep at its smallest budget would cost as much as the grid).
- Rates: 3e-4 x sqrt(4096 / dim) x {0.5, 1, 2} (Table 2's 3e-4 at the 7B's width, larger for narrower models,
  as GPT-3's Table 2.1 does), swept at each size's smallest fit budget, the best one used for the size's runs.
- Batch 256 x 2048 tokens (0.5M: the 4M of Table 2 would leave the 1e19 budget's largest size 1,200 steps), the
  paper's AdamW, clipping and 2000 warmup steps (§2.3), WSD with a 20% cooldown to 0 for the branches, bf16
  compute with the paper's checkpointing.
"""

import math
import os

from experiments import isoflop, spec
from experiments.configs.common import paper_config
from llama_jax import corpus_spec

# dim, layers; heads of 128 (LLaMA's head size), SwiGLU hidden a multiple of 256 (LLaMA's multiple_of).
SIZES = {"d768l12": (768, 12), "d1024l16": (1024, 16), "d1280l20": (1280, 20), "d1536l24": (1536, 24),
         "d2048l24": (2048, 24), "d2560l28": (2560, 28), "d3072l32": (3072, 32), "d4096l32": (4096, 32)}
NON_EMBEDDING = {"d768l12": 84_953_856, "d1024l16": 205_554_688, "d1280l20": 406_375_680,
                 "d1536l24": 679_552_512, "d2048l24": 1_233_225_728, "d2560l28": 2_220_505_600,
                 "d3072l32": 3_624_078_336, "d4096l32": 6_476_271_616}  # asserted in the tests
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, eq. 10
FIT_BUDGETS = {1e19: ("d768l12", "d1024l16", "d1280l20", "d1536l24", "d2048l24"),
               3e19: ("d768l12", "d1024l16", "d1280l20", "d1536l24", "d2048l24"),
               1e20: ("d1024l16", "d1280l20", "d1536l24", "d2048l24", "d2560l28"),
               3e20: ("d1280l20", "d1536l24", "d2048l24", "d2560l28", "d3072l32")}
HELDOUT_BUDGET = 3e21
HELDOUT_SIZES = ("d2560l28", "d3072l32", "d4096l32")
SEED_BUDGET = 1e19
LR_FACTORS = (0.5, 1.0, 2.0)
BATCH, SEQ_LEN = 256, 2048
COOLDOWN = 0.2
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "paper_isoflop.csv")


def lr_candidates(size: str) -> tuple[float, ...]:
    """The size's three peak learning rates."""
    return tuple(float(f"{f * 3e-4 * math.sqrt(4096 / SIZES[size][0]):.3g}") for f in LR_FACTORS)


def design() -> isoflop.Design:
    """The study as an `experiments.isoflop.Design`, its rates read from RESULTS (collected from the pod's
    workdir with `python -m experiments.collect --sweep=gs://BUCKET/paper_isoflop --out=RESULTS`)."""
    return isoflop.Design(non_embedding=NON_EMBEDDING, fit_budgets=FIT_BUDGETS, heldout_budget=HELDOUT_BUDGET,
                          heldout_sizes=HELDOUT_SIZES, seed_budget=SEED_BUDGET, lr_candidates=lr_candidates,
                          tokens_per_step=BATCH * SEQ_LEN, cooldown=COOLDOWN, results=RESULTS)


def get_config(arg: str | None = None):
    """The run `arg` names; by default the rate sweep's middle rate for d1024l16 (its rate given, so the
    default works before any result is collected)."""
    d = design()
    arg = arg or d.lr_run("d1024l16", lr_candidates("d1024l16")[1])
    s = spec.parse(arg, sizes=SIZES, knobs=("seed", "lr"), flags=("stable", "heldout"))
    dim, layers = SIZES[s.size]
    c = paper_config("llama_7b")  # the paper's optimizer, vocabulary, bf16 and checkpointing
    c.model.dim, c.model.n_layers, c.model.n_heads = dim, layers, dim // 128
    c.model.n_kv_heads = None
    c.train.seq_len, c.train.global_batch_size = SEQ_LEN, BATCH
    c.train.steps = spec.steps_for(s.tokens, BATCH, SEQ_LEN)
    c.seed = int(s.knob("seed", 0))
    lr = s.knob("lr", 0) or d.chosen_lr(s.size)
    if not lr:
        raise ValueError(f"spec {arg!r}: no lr= and no learning-rate sweep result for {s.size} in {RESULTS}; "
                         "give lr= or train and collect the rate sweep first")
    c.optimizer.peak_lr = lr
    c.optimizer.schedule = "wsd"
    c.optimizer.final_lr_fraction = 0.0
    c.optimizer.cooldown_fraction = 0.0 if "stable" in s.flags else COOLDOWN
    if "stable" in s.flags:  # the stable phase keeps the checkpoints its budgets' cooldowns branch from
        c.checkpoint.keep_steps = tuple(step for step in d.cooldown_starts(s.size) if step <= c.train.steps)
    c.lock()
    return c


def sweep() -> list[str]:
    return design().sweep()


def only(stage: str) -> str:
    """A regular expression for `experiments.sweep --only` naming the runs of `stage` (lr, grid or heldout)."""
    return design().only(stage)


def forecast_args() -> str:
    return design().forecast_args()


def fit_runs() -> list[str]:
    return design().fit_runs()


def data_tokens(config) -> dict[str, float]:
    """The paper's data: each source's unique tokens by Table 1 (its share of 1.4T over its epochs)."""
    return corpus_spec.table1_unique_tokens()
