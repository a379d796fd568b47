"""The mixture swarm (`make mixture`, README "Mixture laws"): small proxy runs on mixtures of the seven sources,
from which experiments.mixing fits mixture laws and predicts the best mixture for the target runs of
experiments/configs/mixture_target.py.

    python -m experiments.sweep --config=experiments/configs/mixture_swarm.py --dry-run
    python -m llama_jax.train --config=experiments/configs/mixture_swarm.py:size=d16l1,mix=17 --workdir=...

Design (each choice is measured or cited):
- Mixtures (experiments.mixing): SWARM draws from a Dirichlet centred on Table 1 (RegMix's way), with the
  concentration mixing.concentration picks: the largest at which commoncrawl's 5th percentile is half its Table 1
  weight (5.6), so the dominant source ranges from a third of the mass to nearly all of it, c4 up to 2.8 times
  its Table 1 weight and the five small sources from the floor to about 5-6 times theirs (95th percentiles); each shrunk to give every source at least FLOOR (0.5%: every
  source's held-out loss stays inside the region the laws are fitted on, and log-weights stay finite); plus
  Table 1 itself (two seeds: the proxies' seed noise), the seven one-source-heavy corners (half the mass moved
  from Table 1 to one source) and uniform-by-tokens (every token of the corpus equally likely). Spec: `mix=K`
  (the K-th draw, from 1), or the flag `table1`, `uniform` or `heavy_<source>`; runs are named
  `d16l1_1M_mix17`, `d16l1_1M_heavy_books`; every run's weights are in its config (data.weights) and in
  experiments.collect's table (weight/<source>).
- Repetition: the target runs train TARGET_TOKENS; no mixture of the swarm or of the search repeats a source more
  than MAX_EPOCHS times at that budget (UNIQUE_TOKENS: the bundled corpus under the study's tokenizer, asserted
  in the tests), so stackexchange (0.36M tokens) is capped at 36%. The proxies keep PROXY_TOKENS / TARGET_TOKENS
  of every source's documents (data.subsample: a fixed hashed subset), so each source is repeated exactly as
  often in a proxy as in the target run of the same mixture (arXiv 2606.07597).
- Sizes: proxy d16l1 (3.4k non-embedding parameters), target d40l2 (39.9k, 11.8x). Proxies train 1M tokens
  (300 per parameter, as RegMix trains its proxies far past Chinchilla), targets 4M (100 per parameter).
- Cost (estimated_seconds): on these 2 cores a run costs a fixed RUN_SECONDS (process, compiles, data
  pipeline, checkpoints: 45 s, from the first study's record, 35 runs in 102 minutes of which 76 trained by
  TOKENS_PER_S) plus its tokens over cpu_isoflop.TOKENS_PER_S plus its evaluations. A proxy costs about 80 s,
  most of it fixed, so a proxy 2-4x larger would cost little more but its 10x target would cost 2-3x more per
  run (d64l3 at 11.6k tokens/s against d40l2's 19.5k); the hours are spent on runs instead: 52 proxies (6.5 per
  parameter of each per-source law, 5-fold cross-validation fits on 42 of them) in 72 minutes and the target
  set of mixture_target.py in 76, about 2.5 hours with the fits.
- Training as experiments/configs/cpu_isoflop.py: batch 32 x 128, the 2048-piece tokenizer, AdamW beta2 0.99,
  warmup-stable-decay with a 20% cooldown to 0, peak rate 2e-3 x sqrt(256 / dim) (the first study's rule, not
  tuned per mixture), warmup of N tokens; held-out loss of every source on 16 batches (65k tokens) at the end.
"""

import math
import os

import ml_collections
import numpy as np

from experiments import mixing, spec
from experiments import study_tokenizer as tokenizer
from experiments.configs import cpu_isoflop
from experiments.configs.common import cpu_study_config
from llama_jax import corpus_spec

SIZES = {"d16l1": (16, 1), "d40l2": (40, 2)}
NON_EMBEDDING = {name: cpu_isoflop.NON_EMBEDDING[name] for name in SIZES}
PROXY, TARGET = "d16l1", "d40l2"
PROXY_TOKENS, TARGET_TOKENS = 1e6, 4e6
# Training tokens of each source of the bundled corpus under the study's tokenizer (experiments.study_tokenizer's
# corpus_tokens, corpus VERSION 4, three digits; tests/test_mixing.py checks them against the built corpus).
UNIQUE_TOKENS = {"commoncrawl": 2.09e7, "c4": 3.79e6, "github": 6.45e6, "wikipedia": 6.63e6, "books": 6.42e6,
                 "arxiv": 1.09e7, "stackexchange": 3.55e5}
MAX_EPOCHS = mixing.MAX_EPOCHS
FLOOR = 0.005
SWARM, SWARM_SEED = 42, 0
TABLE1_SEEDS = (0, 1)
BATCH, SEQ_LEN, VOCAB = cpu_isoflop.BATCH, cpu_isoflop.SEQ_LEN, cpu_isoflop.VOCAB
COOLDOWN = 0.2
RUN_SECONDS = 45.0  # fixed cost of one run on the idle box (module docstring)
EVAL_BATCHES = 16
FLAGS = ("table1", "uniform", *(f"heavy_{name}" for name in corpus_spec.SOURCE_NAMES))


def unique_tokens() -> np.ndarray:
    """[7] UNIQUE_TOKENS in the order of the sources."""
    return np.array([UNIQUE_TOKENS[name] for name in corpus_spec.SOURCE_NAMES])


def caps() -> np.ndarray:
    """[7] each source's largest weight at the target budget (MAX_EPOCHS)."""
    return mixing.caps(TARGET_TOKENS, unique_tokens(), MAX_EPOCHS)


def table1() -> np.ndarray:
    return np.array([mixing.TABLE1[name] for name in corpus_spec.SOURCE_NAMES])


def mixtures() -> dict[str, np.ndarray]:
    """Every mixture of the swarm by its spec item: `table1`, `uniform`, `heavy_<source>`, `mix=K`."""
    cap = caps()
    out = {"table1": table1(), "uniform": mixing.by_tokens(unique_tokens())}
    out.update({f"heavy_{name}": w for name, w in
                zip(corpus_spec.SOURCE_NAMES, mixing.corners(table1(), cap, FLOOR), strict=True)})
    out.update({f"mix={k + 1}": w for k, w in enumerate(mixing.swarm(SWARM, SWARM_SEED, table1(), FLOOR, cap))})
    return out


def mixture_of(s: spec.Spec, arg: str, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The weights the spec names: exactly one of mix=K or a mixture flag (or one of `extra`'s flags)."""
    known = {**mixtures(), **(extra or {})}
    chosen = [flag for flag in s.flags if flag in known]
    if "mix" in dict(s.knobs):
        k = s.knob("mix", 0)
        if k != int(k) or not 1 <= k <= SWARM:
            raise ValueError(f"spec {arg!r}: mix={k:g} is not a draw of the swarm; give an integer in [1, {SWARM}]")
        chosen.append(f"mix={int(k)}")
    if len(chosen) != 1:
        raise ValueError(f"spec {arg!r} names {len(chosen)} mixtures {chosen}; name exactly one: mix=K (1..{SWARM}) "
                         f"or one of the flags {[f for f in known if not f.startswith('mix=')]}")
    return known[chosen[0]]


def run_config(s: spec.Spec, weights: np.ndarray, eval_every: int | None = None) -> ml_collections.ConfigDict:
    """The locked config of a run of size s.size on s.tokens tokens with `weights`; its training set keeps
    s.tokens / TARGET_TOKENS (at most all) of every source's documents."""
    dim, layers = SIZES[s.size]
    c = cpu_study_config(dim, layers, NON_EMBEDDING[s.size], s.tokens, round(2e-3 * math.sqrt(256 / dim), 6),
                         vocab_size=VOCAB, seq_len=SEQ_LEN, batch=BATCH, tokenizer=cpu_isoflop.TOKENIZER,
                         cooldown=COOLDOWN, stable="stable" in s.flags, seed=int(s.knob("seed", 0)))
    c.data.weights = ml_collections.ConfigDict(dict(zip(corpus_spec.SOURCE_NAMES, np.round(weights, 8).tolist(),
                                                        strict=True)))
    c.data.normalize_weights = True  # the eighth digit's rounding
    fraction = min(1.0, s.tokens / TARGET_TOKENS)
    c.data.subsample = ml_collections.ConfigDict(dict.fromkeys(corpus_spec.SOURCE_NAMES, fraction))
    c.train.eval_batches = EVAL_BATCHES
    c.train.eval_every = eval_every or c.train.steps
    return c


def get_config(arg: str | None = None):
    """The swarm run `arg` names (tokens default to PROXY_TOKENS); by default Table 1's."""
    arg = arg or f"size={PROXY},table1"
    if "tokens=" not in arg:
        arg += f",tokens={PROXY_TOKENS:g}"
    s = spec.parse(arg, sizes=SIZES, knobs=("mix", "seed"), flags=FLAGS)
    c = run_config(s, mixture_of(s, arg))
    c.lock()
    return c


def sweep() -> list[str]:
    """Table 1 (two seeds), uniform-by-tokens, the seven corners, then the SWARM Dirichlet draws."""
    base = f"size={PROXY},tokens={PROXY_TOKENS:g}"
    runs = [f"{base},table1" + (f",seed={seed}" if seed else "") for seed in TABLE1_SEEDS]
    runs += [f"{base},uniform"] + [f"{base},heavy_{name}" for name in corpus_spec.SOURCE_NAMES]
    return runs + [f"{base},mix={k}" for k in range(1, SWARM + 1)]


def run_seconds(size: str, tokens: float, trained: float | None = None, evals: int = 1) -> float:
    """Estimated idle-box seconds of one run: RUN_SECONDS, the tokens it trains itself over TOKENS_PER_S, and
    its evaluations (each 7 x EVAL_BATCHES forward passes, a third of a training step each)."""
    trained = tokens if trained is None else trained
    eval_tokens = evals * len(corpus_spec.SOURCE_NAMES) * EVAL_BATCHES * BATCH * SEQ_LEN / 3
    return RUN_SECONDS + (trained + eval_tokens) / cpu_isoflop.TOKENS_PER_S[size]


def estimated_seconds() -> float:
    """Estimated idle-box wall time of the swarm (seconds)."""
    return len(sweep()) * run_seconds(PROXY, PROXY_TOKENS)


def data_tokens(config) -> dict[str, float]:
    """Training tokens of each source that a run of `config` reads (the bundled corpus under the study's
    tokenizer, times its subsample fraction), so that the sweep's table shows the epochs the run makes ({} before
    the corpus is built)."""
    corpus = corpus_spec.corpus_dir(config.data)
    if not (os.path.exists(config.data.tokenizer) and os.path.exists(os.path.join(corpus, "manifest.json"))):
        return {}
    counts = tokenizer.corpus_tokens(corpus, config.data.tokenizer)
    return {name: count * config.data.subsample.get(name, 1.0) for name, count in counts.items()}
