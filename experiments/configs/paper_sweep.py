"""The paper's models against their training tokens: 7B, 13B, 33B and 65B from 200B tokens up to their Table 2
budgets (1.0T for 7B and 13B, 1.4T for 33B and 65B), in 4M-token batches (2048 x 2048), with Table 2's peak
learning rates and a cosine schedule per budget, as the paper trained them (§2.3). Figure 1 is the curve
through each size's last budget; the shorter budgets give the loss each size reaches at fewer tokens when its
schedule ends there (what Chinchilla's fits are made of).

    python -m experiments.sweep --config=experiments/configs/paper_sweep.py --dry-run --topology=v5p-512
    python -m experiments.sweep --config=experiments/configs/paper_sweep.py --launch=tpu --topology=v5p-512 \\
        --tpu=NAME --zone=ZONE --workdir=gs://BUCKET [--execute]
"""

from experiments import spec
from experiments.configs.common import TABLE2, paper_config
from llama_jax import corpus_spec

SIZES = {"7b": "llama_7b", "13b": "llama_13b", "33b": "llama_33b", "65b": "llama_65b"}
STEP_TOKENS = 200e9  # the grid's spacing, from 200B tokens up to Table 2's budget


def get_config(arg: str = "size=7b,tokens=1e12"):
    s = spec.parse(arg, sizes=SIZES)
    c = paper_config(SIZES[s.size])  # Table 2's peak LR, 2048 x 2048 batch, bf16, save_linear remat
    c.train.steps = spec.steps_for(s.tokens, c.train.global_batch_size, c.train.seq_len)
    c.lock()
    return c


def sweep() -> list[str]:
    runs = []
    for size, preset in SIZES.items():
        budget = TABLE2[preset][1]
        runs += [f"size={size},tokens={k * STEP_TOKENS:g}" for k in range(1, round(budget / STEP_TOKENS) + 1)]
    return runs


def data_tokens(config) -> dict[str, float]:
    """The paper's data: each source's unique tokens by Table 1 (its share of 1.4T over its epochs)."""
    return corpus_spec.table1_unique_tokens()
