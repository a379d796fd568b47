"""The speed knobs on a CPU, measured fairly on a shared machine: every variant of the tiny preset runs in
each of several rounds, and the fastest round counts (contention only ever slows a run down).

    python benchmarks/cpu_variants.py --rounds=3 --steps=5 > cpu.jsonl
"""

import argparse
import json

from llama_jax.perf import train_bench as bench

BASE = {"train.global_batch_size": 16, "train.seq_len": 128, "model.dtype": "float32", "model.remat_policy": "none"}
VARIANTS = {
    "float32, no remat (experiments/configs/tiny.py)": {},
    "remat save_linear": {"model.remat_policy": "save_linear"},
    "remat full": {"model.remat_policy": "full"},
    "bfloat16 compute": {"model.dtype": "bfloat16"},
    "chunked loss (32 positions)": {"train.loss_chunk_size": 32},
    "layers unrolled (scan_layers=False)": {"model.scan_layers": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, overrides in VARIANTS.items():
            result = bench.measure(bench.preset_config(args.preset, **{**BASE, **overrides}), steps=args.steps, warmup=1)
            if name not in best or result["step_s"] < best[name]["step_s"]:
                best[name] = {"variant": name, **result}
    for result in best.values():
        print(json.dumps(result))


if __name__ == "__main__":
    main()
