"""The markdown tables of docs/benchmarks.md from `python -m llama_jax.bench --out=...` JSON lines.

    python benchmarks/table.py results.jsonl
"""

import json
import sys

from llama_jax.perf.train_bench import LOSS_RTOL, loss_difference


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def tpu_table(rows: list[dict]) -> None:
    """The fit table of `python -m llama_jax.aot` results: memory per chip and projected speed."""
    gib = 2**30
    print("| preset | slice | mesh | remat | attention | microbatches (seqs/chip each) | arguments GiB | temporaries GiB "
          "| total GiB / HBM | fits | projected s/step | projected tokens/s/chip |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["params"], r["chips"], r["topology"], r["remat"], r["microbatches"])):
        mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1)
        per_chip = r["global_batch"] // r["microbatches"] / r["chips"]
        print(f"| {r['model']} | {r['topology']} ({r['chips']} chips) | {mesh} | {r['remat']} | {r['attention']} | "
              f"{r['microbatches']} ({per_chip:g}) | {r['argument_bytes'] / gib:.2f} | {r['temp_bytes'] / gib:.2f} | "
              f"{r['total_bytes'] / gib:.1f} / {r['hbm_bytes'] / gib:.0f} | {'yes' if r['fits'] else '**no**'} | "
              f"{r['step_s']:.2f} | {r['tokens_per_s_per_chip']:,.0f} |")


def decode_table(rows: list[dict]) -> None:
    """Generation runs: time to first token, decode tokens/s and the memory-bandwidth bound."""
    if not rows:
        return
    print("\n| decode run | preset | weights / compute | batch | prompt + new | TTFT ms | decode tokens/s | ms/step "
          "| bound tokens/s | of bound | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.get('name', '-')} | {r['preset']} | {r['param_dtype']} / {r['dtype']} | {r['batch']} | "
              f"{r['prompt_len']} + {r['new_tokens']} | {r['ttft_s'] * 1e3:.1f} | {r['decode_tokens_per_s']:,.1f} | "
              f"{r['decode_step_s'] * 1e3:.2f} | {fmt(r['bound_tokens_per_s'], ',.0f')} | "
              f"{fmt(r['fraction_of_bound'], '.0%')} | {r['device']} |")


def main(path: str) -> None:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    tpu = [r for r in rows if "topology" in r]
    if tpu:
        tpu_table(tpu)
        return
    runs = {r["name"]: r for r in rows if "step_s" in r}
    print("| run | preset | attention | remat | batch x seq | ms/step | tokens/s/device | TFLOP/s/device | MFU | planned memory GiB | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs.values():
        print(f"| {r['name']} | {r['preset']} | {r['attention']} | {r['remat']} | {r['global_batch']} x {r['seq_len']} | "
              f"{r['step_s'] * 1e3:.1f} | {r['tokens_per_s_per_device']:,.0f} | {r['model_tflops_per_device']:.0f} | "
              f"{fmt(r['mfu'], '.1%')} | {fmt(r['planned_memory_gib'], '.1f')} | {r['device']} |")
    decode_table([r for r in rows if r.get("mode") == "decode"])
    fits = [r for r in rows if "fits" in r]
    if fits:
        print("\n| fit check (compiled, not run) | preset | weights | remat | batch | planned GiB | device limit GiB | fits |")
        print("|---|---|---|---|---|---|---|---|")
        for r in fits:
            print(f"| {r['name']} | {r['preset']} | {r['param_dtype']} | {r['remat']} | {r['global_batch']} x {r['seq_len']} | "
                  f"{r['planned_memory_gib']:.1f} | {fmt(r['limit_gib'], '.1f')} | {r['fits']} |")
    for r in rows:
        if "error" in r or "skipped" in r:
            print(f"\n{r['name']}: {r.get('error') or r.get('skipped')}")
    if "check_fast" in runs and "check_reference" in runs:
        diff = loss_difference(runs["check_fast"], runs["check_reference"])
        verdict = "PASS" if diff <= LOSS_RTOL else "FAIL"
        print(f"\ncorrectness: fast (bf16, {runs['check_fast']['attention']}, {runs['check_fast']['remat']}) against reference "
              f"(float32, xla, no remat), {len(runs['check_fast']['losses'])} steps: largest relative loss difference "
              f"{diff:.2e} (tolerance {LOSS_RTOL:.2e}): {verdict}")
        print("fast losses     ", [round(x, 4) for x in runs["check_fast"]["losses"]])
        print("reference losses", [round(x, 4) for x in runs["check_reference"]["losses"]])


if __name__ == "__main__":
    main(sys.argv[1])
