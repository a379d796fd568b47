"""The scaling study run on a 2-core CPU (`make scaling`): four LLaMA shapes spanning 12x in non-embedding
parameters N, each trained from below to well above Chinchilla's 20 tokens per parameter, on the bundled
seven-source corpus with Table 1's mixture.

    python -m experiments.sweep --config=experiments/configs/cpu_sweep.py --dry-run
    python -m llama_jax.train --config=experiments/configs/cpu_sweep.py:size=d32l2,tokens=1.1e6 --workdir=...

Design (each choice is measured or cited):
- Sizes: d32l2, d48l2, d64l3, d80l4 (dim, layers; head_dim 16; SwiGLU hidden rounded to 16), N = 27k, 56k,
  151k and 318k non-embedding parameters, 12x. Budgets are D/N in {10, 20, 40, 80, 160} for the smallest (to
  160 tokens per parameter), {5, ..., 80} for d48l2 and d64l3 and {5, ..., 40} for d80l4, rounded to two
  digits: 19 budgets. The sizes and budgets are what fits two hours on the idle 2-core box: the 23 runs of
  seed 0 train in 82 minutes and the 12 of seed 1 in 20 (processes, compiles and evaluations included; the
  measurement is in experiments/results/README.md); a 610k-parameter d112l4 at 5-40 tokens per parameter would
  alone take about two hours (d80l4 ran at 6.8k tokens/s).
- Tokenizer: the corpus's own BPE recipe with 2048 pieces instead of 8192 (experiments.study_tokenizer; 2048 is
  the smallest that holds the corpus's 1370 required characters). The output layer costs 6 x dim x vocab FLOPs
  per token: with 8192 pieces it would be 83% of d48l2's model FLOPs, with 2048 it is 55%.
- Schedule: warmup-stable-decay (Hägele et al. 2024) instead of a cosine per budget: one stable-phase run per
  size (`_stable`) keeps a checkpoint at each budget's cooldown start, and each budget is a branch that only
  trains its cooldown, the last 20% of its steps with a (1 - sqrt) decay to 0. Every budget's run is then
  exactly the run it would be from scratch with that schedule (same warmup, same stable rate, same batches;
  llama_jax.train.checkpoint.restore_branch checks the learning rates agree), so its final loss is a valid
  L(N, D) point; Hägele et al. found such cooldowns match per-length cosine runs. It trains 1.2x the largest
  budget's tokens per size where a cosine per budget trains 1.9x.
- Batch 32 x 128 tokens: at these losses Kaplan's critical batch is far larger, so a small batch wastes no
  tokens, and on a CPU tokens/s barely depends on it (measured: d64l2 at 64 x 128 and 128 x 128 rows within
  4%). AdamW beta2 = 0.99 rather than the paper's 0.95: Porian et al. 2024 found beta2 must be raised at small
  batches. Peak LR 2e-3 x sqrt(256 / dim) (smaller models tolerate larger rates), a third below
  3e-3 x sqrt(256 / dim) as a margin, not tuned: the stable phases' held-out loss rises by at most 0.06 nats
  between evaluations at these rates (experiments/results/README.md tells how the rule was chosen). Warmup of
  N tokens (Porian et al.: short warmup for small models), weight decay 0.1, clipping 1.0 (§2.3).
- `seed=K` (a knob, default 0) reruns a budget with another initialisation and data order; the sweep runs a
  second seed of d32l2 and d48l2 (20 minutes more, measured) to measure the run-to-run noise a fit is
  compared with.
- Held-out loss of every source every 250 steps and at the end (4 batches each, the same batches every time).
"""

import math
import os

from experiments import spec
from experiments import study_tokenizer as tokenizer
from experiments.configs.common import cpu_study_config
from llama_jax import corpus_spec

# dim, layers: the four shapes (head_dim 16).
SIZES = {"d32l2": (32, 2), "d48l2": (48, 2), "d64l3": (64, 3), "d80l4": (80, 4)}
NON_EMBEDDING = {"d32l2": 26_784, "d48l2": 55_536, "d64l3": 150_976, "d80l4": 318_160}  # asserted in the tests
TOKENS_PER_PARAM = {"d32l2": (10, 20, 40, 80, 160), "d48l2": (5, 10, 20, 40, 80), "d64l3": (5, 10, 20, 40, 80),
                    "d80l4": (5, 10, 20, 40)}
# Seeds (initialisation and data order) per size: a second one for the two smallest measures the run-to-run
# noise that the fits' residuals are compared with.
SEEDS = {"d32l2": (0, 1), "d48l2": (0, 1), "d64l3": (0,), "d80l4": (0,)}
BATCH, SEQ_LEN, VOCAB = 32, 128, 2048
COOLDOWN = 0.2
# Built by `python -m experiments.study_tokenizer` (make scaling), beside the corpus, never in it.
TOKENIZER = os.path.join(os.path.dirname(corpus_spec.DEFAULT_CORPUS), "study", f"tokenizer_{VOCAB}.model")


def budgets(size: str) -> list[float]:
    """The size's token budgets: its tokens-per-parameter ratios times N, rounded to two significant digits."""
    return [float(f"{ratio * NON_EMBEDDING[size]:.2g}") for ratio in TOKENS_PER_PARAM[size]]


def cooldown_starts(size: str) -> list[int]:
    """Steps where the size's budgets leave the stable phase: where their branches start."""
    starts = []
    for tokens in budgets(size):
        steps = spec.steps_for(tokens, BATCH, SEQ_LEN)
        starts.append(steps - round(COOLDOWN * steps))
    return starts


def get_config(arg: str = "size=d32l2,tokens=1.1e6"):
    s = spec.parse(arg, sizes=SIZES, knobs=("seed",), flags=("stable",))
    dim, layers = SIZES[s.size]
    c = cpu_study_config(dim, layers, NON_EMBEDDING[s.size], s.tokens, round(2e-3 * math.sqrt(256 / dim), 5),
                         vocab_size=VOCAB, seq_len=SEQ_LEN, batch=BATCH, tokenizer=TOKENIZER, cooldown=COOLDOWN,
                         stable="stable" in s.flags, seed=int(s.knob("seed", 0)))
    c.train.eval_every, c.train.eval_batches = 250, 4
    if "stable" in s.flags:  # the stable phase keeps the checkpoints its budgets' cooldowns branch from
        c.checkpoint.keep_steps = tuple(step for step in cooldown_starts(s.size) if step <= c.train.steps)
    c.lock()
    return c


def sweep() -> list[str]:
    """Per size and seed: the stable phase up to the last cooldown start, then every budget's cooldown; the
    second seeds after all first ones."""
    runs = []
    for seed in sorted({seed for seeds in SEEDS.values() for seed in seeds}):
        for size in (size for size in SIZES if seed in SEEDS[size]):
            knob = f",seed={seed}" if seed else ""
            runs.append(f"size={size},tokens={max(cooldown_starts(size)) * BATCH * SEQ_LEN}{knob},stable")
            runs += [f"size={size},tokens={tokens:g}{knob}" for tokens in budgets(size)]
    return runs


def data_tokens(config) -> dict[str, float]:
    """Training tokens of each source of the bundled corpus under the study's tokenizer ({} before it is built)."""
    corpus = corpus_spec.corpus_dir(config.data)
    if not (os.path.exists(config.data.tokenizer) and os.path.exists(os.path.join(corpus, "manifest.json"))):
        return {}
    return tokenizer.corpus_tokens(corpus, config.data.tokenizer)
