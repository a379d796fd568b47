"""Our step beside PyTorch's on this machine: one process, alternating rounds, the ratio.

    python -m benchmarks.torch_peer                                  # tiny, batch 16 x 128, float32, 2 threads
    python -m benchmarks.torch_peer --rounds=9 --out=results.jsonl   # more rounds; append the JSON line to a file
    python -m benchmarks.torch_peer --parts=train --peers=eager --config.train.document_mask=False
    python -m benchmarks.torch_peer --parts=train --variant=model.linear_tokens=batch_length,model.scan_unroll=1

The peer is transformers' `LlamaForCausalLM` built from the same model config (`convert_hf.hf_config`) and our
initial weights (`convert_hf.hf_tensors`), in eager mode (SDPA attention, plain causal mask) and under
`torch.compile` (the loss function, forward and backward; the optimizer stays eager), in its default mode
(`compile`) or "max-autotune-no-cudagraphs" (`autotune`). Both train on the same
synthetic batches in float32 with the same AdamW (betas, eps, weight decay on the matrices `optim.decays`
picks, the same learning-rate schedule) and global-norm clipping, so their per-step losses agree to float
rounding: the line `losses` shows it. Parts:

- train: one optimizer step per item, `train_step.make_train_step` against forward, backward, clip, AdamW;
- eval: the held-out loss of one batch (forward and loss, no gradient), `train_step.make_eval_step`;
- decode: `sampling.generate` against `generate()` with transformers' KV cache (greedy, `--decode_batch`
  prompts of `--prompt_len` random tokens, `--new_tokens` each, no EOS), timed whole (prefill included).

Each round runs every system for `--steps` items, in an order that rotates from round to round; contention
from other processes slows whichever system it meets, so the ratio of each round (our tokens/s over the
peer's) is the figure, and the median over rounds is reported with its range. `--threads` pins the process
to that many cores before JAX or torch start (XLA's intra-op pool takes its size from the cores it may use)
and sets `torch.set_num_threads`. Each system's achieved GFLOP/s (llama_jax.perf.flops: 6N plus attention per
trained token, a third of it per evaluated one) is set against the float32 matmul peak timed in the same
process (a 2048^3 product by XLA and by torch, the best of 5). Prints a line per round, a summary per part,
then one line of JSON.

    python -m benchmarks.torch_peer --parts=train --config=experiments/configs/cpu_isoflop.py:size=d32l2,tokens=3.11e5,lr=0.005657
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from llama_jax import cli
from llama_jax.platforms import cpu_model

TINY = str(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tiny.py")
PARTS = ("train", "eval", "decode")
# torch modes: eager, torch.compile's default mode, and its "max-autotune-no-cudagraphs" (autotuned kernels on CPU)
PEERS = ("eager", "compile", "autotune")
COMPILE_MODES = {"compile": None, "autotune": "max-autotune-no-cudagraphs"}
PEAK_SIZE = 2048  # the square float32 matmul the machine's peak is timed on
DISTINCT_BATCHES = 4  # every system cycles through the same batches


def pin_threads(threads: int) -> list[int]:
    """Restrict this process to `threads` of the cores it may run on (before JAX or torch create their thread
    pools) and give torch as many threads; returns the cores."""
    import torch

    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= threads <= len(allowed):
        raise ValueError(f"--threads={threads}: this process may run on {len(allowed)} cores; choose 1 to {len(allowed)}")
    cores = allowed[:threads]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(threads)
    return cores


class Ours:
    """Our jitted training step, eval step and generation on one device, from `config`'s initial state."""

    def __init__(self, config):
        import jax

        from llama_jax import sharding
        from llama_jax.train import step as train_step
        from llama_jax.train.synthetic import SyntheticStream

        self.config = config
        self.mesh = sharding.make_mesh(config, jax.devices()[:1])
        self.model = train_step.model_config(config)
        stream = SyntheticStream(config)
        self.host_batches = [next(stream) for _ in range(DISTINCT_BATCHES)]
        self.batches = [train_step.device_batch(b, config, self.mesh) for b in self.host_batches]
        self.state = train_step.init_state(config, self.mesh, jax.random.PRNGKey(config.seed))
        self.initial_params = jax.tree.map(lambda x: x.copy(), self.state.params)  # the steps donate the state
        start = time.perf_counter()
        self.train = train_step.make_train_step(config, self.mesh).lower(self.state, self.batches[0]).compile()
        self.compile_s = time.perf_counter() - start
        self.evaluate = train_step.make_eval_step(config, self.mesh)
        self.losses: list = []
        self.steps = 0

    def train_steps(self, n: int) -> float:
        """Seconds for `n` training steps."""
        import jax

        start = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.train(self.state, self.batches[self.steps % DISTINCT_BATCHES])
            self.losses.append(metrics["loss"])
            self.steps += 1
        jax.block_until_ready(self.state)
        return time.perf_counter() - start

    def eval_batches(self, n: int) -> float:
        """Seconds for the held-out loss of `n` batches (no gradient)."""
        import jax

        start = time.perf_counter()
        out = [self.evaluate(self.state.params, self.batches[i % DISTINCT_BATCHES]) for i in range(n)]
        jax.block_until_ready(out)
        return time.perf_counter() - start

    def generate(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
        """(seconds, new ids per prompt) of greedy generation from the initial parameters."""
        from llama_jax.inference import sampling

        start = time.perf_counter()
        out = sampling.generate(self.model, self.initial_params, prompts, max_new_tokens=new_tokens)
        return time.perf_counter() - start, out.tokens


class TorchPeer:
    """transformers' LlamaForCausalLM with our config and initial weights, AdamW and clipping as ours."""

    def __init__(self, ours: Ours, mode: str):
        import jax
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from llama_jax.convert import hf as convert_hf
        from llama_jax.train import optim

        config = ours.config
        self.hf = LlamaForCausalLM(LlamaConfig(**convert_hf.hf_config(ours.model, "float32"), attn_implementation="sdpa"))
        initial = jax.device_get(ours.initial_params)
        state = {name: torch.tensor(array) for name, array in convert_hf.hf_tensors(ours.model, initial)}
        self.hf.load_state_dict(state, strict=True)
        opt = config.optimizer
        # optim.decays: every matrix but the input embedding decays, norms and the embedding do not (unless
        # optimizer.decay_embeddings_and_norms)
        decay = [p for n, p in self.hf.named_parameters()
                 if opt.decay_embeddings_and_norms or (p.ndim == 2 and n != "model.embed_tokens.weight")]
        rest = [p for p in self.hf.parameters() if all(p is not q for q in decay)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=0.0, betas=(opt.b1, opt.b2), eps=opt.eps)
        self.schedule = optim.learning_rate_schedule(config)
        self.clip = opt.clip_norm
        self.batches = [{k: torch.from_numpy(v.astype("int64" if k != "loss_mask" else "float32")) for k, v in b.items()}
                        for b in ours.host_batches]
        self.loss_sum = (torch.compile(self._loss_sum, mode=COMPILE_MODES[mode]) if mode in COMPILE_MODES
                         else self._loss_sum)
        self.losses: list = []
        self.steps = 0

    def _loss_sum(self, inputs, targets, mask):
        """(sum of token losses, token count) in float32, as `llama_jax.model.loss.cross_entropy`."""
        import torch.nn.functional as F

        logits = self.hf(input_ids=inputs).logits.float()
        losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return (losses * mask.flatten()).sum(), mask.sum()

    def _batch(self, i: int):
        b = self.batches[i % DISTINCT_BATCHES]
        return b["inputs"], b["targets"], b["loss_mask"]

    def train_steps(self, n: int) -> float:
        import torch

        start = time.perf_counter()
        for _ in range(n):
            for group in self.optimizer.param_groups:
                group["lr"] = float(self.schedule(self.steps))
            total, count = self.loss_sum(*self._batch(self.steps))
            loss = total / count.clamp(min=1.0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.hf.parameters(), self.clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.losses.append(loss.detach())
            self.steps += 1
        return time.perf_counter() - start

    def eval_batches(self, n: int) -> float:
        import torch

        start = time.perf_counter()
        with torch.no_grad():
            for i in range(n):
                self.loss_sum(*self._batch(i))
        return time.perf_counter() - start

    def generate(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
        import torch

        ids = torch.tensor(prompts)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   use_cache=True, pad_token_id=0)
        return time.perf_counter() - start, out[:, ids.shape[1]:].tolist()


def matmul_peak(size: int = PEAK_SIZE, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of the best of `repeats` float32 [size, size] x [size, size] products, by XLA (jnp.dot) and by
    torch, in this process on its pinned cores: what the box's two cores reach on a large matrix product, the
    physical limit the steps are compared with."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    flops = 2 * size**3
    dot = jax.jit(jnp.dot)
    x = jnp.asarray(a)
    dot(x, x).block_until_ready()
    t = torch.from_numpy(a)
    torch.mm(t, t)
    best = {"xla": math.inf, "torch": math.inf}
    for _ in range(repeats):
        start = time.perf_counter()
        dot(x, x).block_until_ready()
        best["xla"] = min(best["xla"], time.perf_counter() - start)
        start = time.perf_counter()
        torch.mm(t, t)
        best["torch"] = min(best["torch"], time.perf_counter() - start)
    return {f"{name}_gflop_per_s": flops / seconds / 1e9 for name, seconds in best.items()}


def alternate(systems: dict[str, Callable[[], float]], rounds: int, report: Callable[[int, dict], None]) -> tuple[dict, dict]:
    """(wall seconds, process CPU seconds) per round of each system, `rounds` times, the order rotating by one
    system each round. CPU time counts every thread of the process, spinning included."""
    names = list(systems)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.process_time()
            seconds[name].append(systems[name]())
            cpu[name].append(time.process_time() - start)
        report(r, {name: s[-1] for name, s in seconds.items()})
    return seconds, cpu


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def summarise(part: str, tokens: int, seconds: dict[str, list[float]], cpu: dict[str, list[float]] | None = None,
              flops_per_token: float | None = None, peak: float | None = None) -> dict:
    """tokens/s of each system and, per peer, the per-round ratio ours / peer with its median and range; with
    `cpu`, the same per CPU-second (tokens per second of all the process's threads); with `flops_per_token`,
    each system's median achieved GFLOP/s, and with `peak` (GFLOP/s) its share of that."""
    def ratios(rates):
        return {name: spread([o / p for o, p in zip(rates["ours"], r, strict=True)]) for name, r in rates.items() if name != "ours"}

    rates = {name: [tokens / s for s in values] for name, values in seconds.items()}
    result = {"part": part, "tokens_per_round": tokens, "tokens_per_s": {name: spread(r) for name, r in rates.items()},
              "ratio": ratios(rates)}
    if cpu is not None:
        per_cpu = {name: [tokens / s for s in values] for name, values in cpu.items()}
        result["tokens_per_cpu_s"] = {name: spread(r) for name, r in per_cpu.items()}
        result["cpu_ratio"] = ratios(per_cpu)
    if flops_per_token:
        result["gflop_per_s"] = {name: statistics.median(r) * flops_per_token / 1e9 for name, r in rates.items()}
        if peak:
            result["share_of_peak"] = {name: g / peak for name, g in result["gflop_per_s"].items()}
    return result


def round_line(part: str, tokens: int) -> Callable[[int, dict], None]:
    def report(r: int, seconds: dict) -> None:
        ours = tokens / seconds["ours"]
        peers = "  ".join(f"{name} {tokens / s:,.0f} ({ours * s / tokens:.2f}x)" for name, s in seconds.items() if name != "ours")
        print(f"{part} round {r + 1}: ours {ours:,.0f} tokens/s  {peers}", flush=True)
    return report


def summary_lines(result: dict) -> list[str]:
    rates, lines = result["tokens_per_s"], []
    for name, r in rates.items():
        line = f"{result['part']:6s} {name:14s} median {r['median']:8,.0f} tokens/s  [{r['min']:,.0f} - {r['max']:,.0f}]"
        if name in result["ratio"]:
            q = result["ratio"][name]
            line += f"  ours/{name}: median {q['median']:.2f}x [{q['min']:.2f} - {q['max']:.2f}]"
            if "cpu_ratio" in result:
                line += f"; per CPU-second {result['cpu_ratio'][name]['median']:.2f}x"
        if "gflop_per_s" in result:
            line += f"  {result['gflop_per_s'][name]:.1f} GFLOP/s"
            if "share_of_peak" in result:
                line += f" ({result['share_of_peak'][name]:.0%} of the matmul peak)"
        lines.append(line)
    return lines


def max_relative_difference(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    return max(abs(x - y) / abs(y) for x, y in zip(a[:n], b[:n], strict=True))


def variant_config(config, spec: str):
    """A copy of `config` with the comma-separated `section.field=value` changes of `spec` (values parsed as the
    field's type)."""
    config = config.copy_and_resolve_references()
    for change in filter(None, spec.split(",")):
        path, _, text = change.partition("=")
        section, _, field = path.partition(".")
        if not text or section not in config or field not in config[section]:
            raise cli.UsageError(f"--variant={spec}: {change!r} is not section.field=value of a field that exists")
        old = config[section][field]
        config[section][field] = text in ("True", "true", "1") if isinstance(old, bool) else type(old)(text)
    return config


def check_settings(parts: list[str], peers: list[str], rounds: int, steps: int, warmup: int) -> None:
    """Raise naming what is wrong with the command's choices (before anything starts)."""
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(peers) - set(PEERS))
    if unknown or not parts or not peers:
        raise cli.UsageError(f"--parts={','.join(parts)} --peers={','.join(peers)}: choose parts from {PARTS} and "
                             f"peers from {PEERS} (comma-separated, at least one each)")
    if rounds < 1 or steps < 1 or warmup < 1:
        raise cli.UsageError(f"--rounds={rounds} --steps={steps} --warmup={warmup}: each must be at least 1 (the "
                             "first warm-up step compiles)")


def shape_name(shape: dict) -> str:
    """`d32l2 (26,784 non-embedding parameters, vocabulary 2048)`: the study's naming of a model's shape."""
    return (f"d{shape['dim']}l{shape['n_layers']} ({shape['non_embedding_params']:,} non-embedding parameters, "
            f"vocabulary {shape['vocab_size']})")


def run(config, *, parts: list[str], peers: list[str], rounds: int, steps: int, warmup: int, threads: int,
        decode_batch: int, prompt_len: int, new_tokens: int, variants: tuple[str, ...] = ()) -> dict:
    """Benchmark `parts` of our model against each torch `peers` mode; returns the whole record (printing as it goes)."""
    check_settings(parts, peers, rounds, steps, warmup)
    cores = pin_threads(threads)
    import jax
    import numpy as np
    import torch
    import transformers

    from llama_jax.perf.flops import train_flops_per_token
    from llama_jax.perf.info import describe

    ours = Ours(config)
    others = {f"ours[{spec}]": Ours(variant_config(config, spec)) for spec in variants}
    torches = {f"torch_{mode}": TorchPeer(ours, mode) for mode in peers}
    resolved = ours.model.for_platform(jax.default_backend())
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {threads} used (cores {cores})",
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads": threads,
        "preset": str(config.get("model_preset", "custom")),  # what the config started from; `shape` is what ran
        "shape": {"dim": ours.model.dim, "n_layers": ours.model.n_layers, "n_heads": ours.model.n_heads,
                  "vocab_size": ours.model.vocab_size,
                  "non_embedding_params": describe(ours.model)["non_embedding_params"]},
        "batch": [config.train.global_batch_size, config.train.seq_len],
        "model": {"dtype": ours.model.dtype, "document_mask": bool(config.train.document_mask),
                  "scan_layers": ours.model.scan_layers, "scan_unroll": resolved.scan_unroll,
                  "linear_tokens": resolved.linear_tokens, "remat": ours.model.remat_policy},
        "ours_compile_s": round(ours.compile_s, 2),
        "matmul_peak": matmul_peak(),
        "parts": [],
    }
    peak = max(record["matmul_peak"].values())
    train_flops = train_flops_per_token(ours.model, config.train.seq_len)  # 6N plus attention (llama_jax.perf.flops)
    flops_per_token = {"train": train_flops, "eval": train_flops / 3}  # a forward is a third of forward and backward
    settings = ", ".join(f"{k}={v}" for k, v in record["model"].items())
    print(f"{record['machine']}; jax {jax.__version__}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}; {shape_name(record['shape'])} batch {record['batch'][0]} x {record['batch'][1]}, "
          f"{settings}; our step compiled in {ours.compile_s:.1f} s", flush=True)
    print(f"float32 matmul peak ({PEAK_SIZE}^3, best of 5, this process): " + ", ".join(
        f"{k.split('_')[0]} {v:.1f} GFLOP/s" for k, v in record["matmul_peak"].items()), flush=True)

    if "train" in parts or "eval" in parts:
        tokens = steps * config.train.global_batch_size * config.train.seq_len
        for part in [p for p in ("train", "eval") if p in parts]:
            every = {"ours": ours, **others, **torches}
            method = "train_steps" if part == "train" else "eval_batches"
            start = time.perf_counter()
            for system in every.values():
                getattr(system, method)(warmup)  # compiles (jit, torch.compile) and warms up
            warm_s = time.perf_counter() - start
            seconds, cpu = alternate({name: (lambda s=s, m=method: getattr(s, m)(steps)) for name, s in every.items()},
                                     rounds, round_line(part, tokens))
            result = {**summarise(part, tokens, seconds, cpu, flops_per_token[part], peak), "warmup_s": round(warm_s, 1)}
            if part == "train":
                our_losses = [float(x) for x in ours.losses]
                result["losses"] = {"ours_last": our_losses[-1], **{
                    f"{name}_max_relative_difference": max_relative_difference([float(x) for x in t.losses], our_losses)
                    for name, t in torches.items()}}
            record["parts"].append(result)
            print("\n".join(summary_lines(result)), flush=True)
            if part == "train":
                print(f"train  losses: ours {result['losses']['ours_last']:.4f} after {ours.steps} steps; " + ", ".join(
                    f"{k} {v:.1e}" for k, v in result["losses"].items() if k != "ours_last"), flush=True)

    if "decode" in parts:
        prompts = np.random.default_rng(config.seed).integers(0, ours.model.vocab_size, (decode_batch, prompt_len)).tolist()
        eager = TorchPeer(ours, "eager")  # the initial weights, as ours generates from; HF generate runs eagerly
        systems = {"ours": lambda: ours.generate(prompts, new_tokens), "torch_eager": lambda: eager.generate(prompts, new_tokens)}
        start = time.perf_counter()
        tokens_out = {name: f()[1] for name, f in systems.items()}  # compiles and warms up
        warm_s = time.perf_counter() - start
        tokens = steps * decode_batch * new_tokens
        seconds, cpu = alternate({name: (lambda f=f: sum(f()[0] for _ in range(steps))) for name, f in systems.items()},
                                 rounds, round_line("decode", tokens))
        same = np.mean(np.asarray(tokens_out["ours"]) == np.asarray(tokens_out["torch_eager"]))
        result = {**summarise("decode", tokens, seconds, cpu), "warmup_s": round(warm_s, 1), "batch": decode_batch,
                  "prompt_len": prompt_len, "new_tokens": new_tokens, "same_greedy_tokens": float(same)}
        record["parts"].append(result)
        print("\n".join(summary_lines(result)), flush=True)
        print(f"decode greedy tokens equal to transformers': {same:.1%}", flush=True)
    return record


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    split = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    config = FLAGS.config
    record = run(config, parts=split(FLAGS.parts), peers=split(FLAGS.peers), rounds=FLAGS.rounds, steps=FLAGS.steps,
                 warmup=FLAGS.warmup, threads=FLAGS.threads, decode_batch=FLAGS.decode_batch,
                 prompt_len=FLAGS.prompt_len, new_tokens=FLAGS.new_tokens, variants=tuple(FLAGS.variant))
    record = {"config": config_flags.get_config_filename(FLAGS["config"]), **record}
    print(json.dumps(record))
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", TINY, "experiment config file (default: the tiny preset's)")
    flags.DEFINE_string("parts", ",".join(PARTS), f"comma-separated, from {PARTS}")
    flags.DEFINE_string("peers", ",".join(PEERS), f"torch modes, comma-separated, from {PEERS}")
    flags.DEFINE_integer("rounds", 5, "alternating rounds per part")
    flags.DEFINE_integer("steps", 3, "training steps (eval batches, generate calls) per system per round")
    flags.DEFINE_integer("warmup", 2, "untimed steps per system first (the first compiles)")
    flags.DEFINE_integer("threads", 2, "cores for the process; XLA and torch both use this many threads")
    flags.DEFINE_integer("decode_batch", 1, "prompts per generate call")
    flags.DEFINE_integer("prompt_len", 16, "random prompt tokens per row")
    flags.DEFINE_integer("new_tokens", 64, "tokens generated per row")
    flags.DEFINE_string("out", None, "append the JSON line to this file")
    flags.DEFINE_multi_string("variant", [], "also time our step with these config fields changed, e.g. "
                              "--variant=model.linear_tokens=batch_length,model.scan_unroll=1 (repeatable)")
    cli.run_absl(main)
