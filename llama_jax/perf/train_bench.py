"""Training speed on the devices at hand: warm-up, then timed training steps on synthetic tokens.

    python -m llama_jax.bench --config=experiments/configs/tiny.py --steps=10
    python -m llama_jax.bench --config=llama_1b --config.train.global_batch_size=8 --config.model.attention_impl=cudnn
    python -m llama_jax.bench --suite=h100 --out=results.jsonl      # the accelerator benchmark, one process
    python -m llama_jax.bench --mode=decode --config=llama_1b --config.model.dtype=bfloat16 --batch_sizes=1,64

Prints step time, tokens/s per device, model TFLOP/s per device and MFU (model FLOPs of llama_jax.perf.flops over
the device's dense bf16 peak; CPUs report tokens/s only), peak device memory, and the config; then one line
of JSON. The steps are the real `make_train_step`, fed with `llama_jax.train.synthetic` batches placed on the
devices beforehand, so input never stalls the timing. `--config` takes an experiment file or a preset name.
`--mode=decode` times generation instead (`llama_jax.perf.decode_bench`): time to first token and decode tokens/s
at each of `--batch_sizes`, beside the memory-bandwidth bound.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from llama_jax import cli
from llama_jax.config import PRESETS
from llama_jax.model import attention
from llama_jax.perf import flops

PRESET_CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "preset.py"
GIB = 1024**3
DISTINCT_BATCHES = 4  # the timed loop cycles through these, already on the devices


def config_flag():
    """The `--config` flag: an experiment file (`path.py` or `path.py:arg`), overridable with `--config.*`."""
    return config_flags.DEFINE_config_file("config", None, "experiment config file, or a model preset name")


def expand_preset_argv(argv: list[str] | None = None) -> list[str]:
    """argv with `--config=PRESET` rewritten to the preset config file, `--config=benchmarks/configs/preset.py:PRESET`."""
    argv = list(sys.argv if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config=") and arg.removeprefix("--config=") in PRESETS:
            argv[i] = f"--config={PRESET_CONFIG}:{arg.removeprefix('--config=')}"
    return argv


def preset_config(preset: str, **overrides):
    """The preset config file's config for `preset`, with dotted overrides: preset_config('llama_1b', **{'train.seq_len': 1024})."""
    spec = importlib.util.spec_from_file_location("preset_config", PRESET_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(preset)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def peak_memory_bytes(device: jax.Device) -> int | None:
    """Peak bytes this process has held on `device`, when the backend reports it (GPU, TPU; not CPU)."""
    stats = device.memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def planned_bytes(memory) -> int:
    """Device bytes XLA planned for one compiled step: arguments + outputs - donated (aliased) + temporaries."""
    return memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes + memory.temp_size_in_bytes


def measure(config, steps: int = 10, warmup: int = 2) -> dict:
    """Run `warmup` then `steps` training steps of `config` on all local devices; returns the figures."""
    from llama_jax import sharding
    from llama_jax.train import step as train_step
    from llama_jax.train.synthetic import SyntheticStream

    mesh = sharding.make_mesh(config)
    step_fn = train_step.make_train_step(config, mesh)  # first: it checks that the batch splits over the mesh
    run = train_step.setup(config, mesh)
    model = run.model
    stream = SyntheticStream(config)
    batches = [run.device_batch(next(stream)) for _ in range(DISTINCT_BATCHES)]
    state = run.init_state(jax.random.PRNGKey(config.seed))

    start = time.perf_counter()
    compiled = step_fn.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()

    losses = []
    for i in range(warmup):
        state, metrics = compiled(state, batches[i % DISTINCT_BATCHES])
        losses.append(metrics["loss"])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, batches[(warmup + i) % DISTINCT_BATCHES])
        losses.append(metrics["loss"])
    jax.block_until_ready((state, losses))
    step_s = (time.perf_counter() - start) / steps

    devices = mesh.devices.size
    device = mesh.devices.flat[0]
    tokens_per_s = config.train.tokens_per_step / step_s / devices
    flops_per_s = tokens_per_s * flops.train_flops_per_token(model, config.train.seq_len)
    peak = flops.peak_flops(device.device_kind)
    peak_memory = peak_memory_bytes(device)
    planned = None if memory is None else planned_bytes(memory)
    return {
        "device": device.device_kind,
        "devices": devices,
        "preset": str(config.get("model_preset", "custom")),
        "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
        "dtype": model.dtype,
        "remat": model.remat_policy,
        "scan_layers": model.scan_layers,
        "attention": attention.resolve(model.attention_impl, model.dtype),
        "global_batch": config.train.global_batch_size,
        "seq_len": config.train.seq_len,
        "microbatches": config.train.microbatches,
        "document_mask": bool(config.train.document_mask),
        "loss_chunk_size": config.train.loss_chunk_size,
        "mesh": dict(mesh.shape),
        "steps": steps,
        "compile_s": round(compile_s, 2),
        "step_s": step_s,
        "tokens_per_s_per_device": tokens_per_s,
        "model_tflops_per_device": flops_per_s / 1e12,
        "mfu": None if peak is None else flops_per_s / peak,
        "peak_memory_gib": None if peak_memory is None else peak_memory / GIB,
        "planned_memory_gib": None if planned is None else planned / GIB,
        "losses": [float(x) for x in losses],
    }


def format_result(r: dict) -> str:
    """One human-readable line per run."""
    line = (f"{r['preset']} {r['dtype']} remat={r['remat']} attention={r['attention']} batch={r['global_batch']}x{r['seq_len']} "
            f"on {r['devices']} x {r['device']}: {r['step_s'] * 1e3:.1f} ms/step, "
            f"{r['tokens_per_s_per_device']:,.0f} tokens/s/device, {r['model_tflops_per_device']:.1f} TFLOP/s/device")
    if r["mfu"] is not None:
        line += f", MFU {r['mfu']:.1%}"
    if r["peak_memory_gib"] is not None:
        line += f", peak memory {r['peak_memory_gib']:.1f} GiB"
    return line + f", loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} (compile {r['compile_s']:.0f} s)"


def fit(config) -> dict:
    """Compile (without running) `config`'s step for the local devices: XLA's planned bytes per device against
    the device's memory limit. Answers 'does this preset train on this accelerator' without allocating."""
    from llama_jax import sharding
    from llama_jax.train import step as train_step

    mesh = sharding.make_mesh(config)
    step_fn = train_step.make_train_step(config, mesh)  # first: it checks that the batch splits over the mesh
    run = train_step.setup(config, mesh)
    compiled = step_fn.lower(run.abstract_state, run.abstract_batch()).compile()
    planned = planned_bytes(compiled.memory_analysis())
    stats = mesh.devices.flat[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    model = run.model
    return {
        "preset": str(config.get("model_preset", "custom")), "param_dtype": model.param_dtype, "remat": model.remat_policy,
        "global_batch": config.train.global_batch_size, "seq_len": config.train.seq_len,
        "planned_memory_gib": planned / GIB, "limit_gib": None if limit is None else limit / GIB,
        "fits": None if limit is None else planned <= limit,
    }


# The accelerator benchmark (one H100 or H200): each entry is (name, preset, overrides, kind), kind 'run' (train
# steps), 'fit' (compile only) or 'decode' (generation; `decode.*` overrides are its arguments). `check_*` pairs
# train the same batches from the same initialisation, so their losses must agree within bf16 rounding.
# Synthetic rows hold one document each, so the document mask changes nothing but the kernel's cost: FAST runs
# plain causal attention, and `1b_cudnn_document_mask` measures what masking packed documents costs cuDNN.
FAST = {"model.dtype": "bfloat16", "model.attention_impl": "cudnn", "model.remat_policy": "save_linear",
        "train.document_mask": False}
REFERENCE = {"model.dtype": "float32", "model.attention_impl": "xla", "model.remat_policy": "none"}
DECODE = {"model.dtype": "bfloat16", "model.param_dtype": "bfloat16", "decode.prompt_len": 128, "decode.new_tokens": 128}
H100_SUITE = [
    ("check_fast", "llama_1b", {**FAST, "train.global_batch_size": 2}, "run"),
    ("check_reference", "llama_1b", {**REFERENCE, "train.global_batch_size": 2}, "run"),
    ("1b_cudnn", "llama_1b", {**FAST, "train.global_batch_size": 8}, "run"),
    ("1b_xla", "llama_1b", {**FAST, "model.attention_impl": "xla", "train.global_batch_size": 8}, "run"),
    ("1b_decode_batch1", "llama_1b", {**DECODE, "decode.batch": 1}, "decode"),
    ("1b_decode_batch64", "llama_1b", {**DECODE, "decode.batch": 64}, "decode"),
    ("400m_cudnn", "llama_400m", {**FAST, "train.global_batch_size": 16}, "run"),
    ("400m_xla", "llama_400m", {**FAST, "model.attention_impl": "xla", "train.global_batch_size": 16}, "run"),
    ("3b_cudnn", "llama_3b", {**FAST, "model.remat_policy": "full", "train.global_batch_size": 4}, "run"),
    ("3b_xla", "llama_3b", {**FAST, "model.attention_impl": "xla", "model.remat_policy": "full", "train.global_batch_size": 4}, "run"),
    ("1b_cudnn_document_mask", "llama_1b", {**FAST, "train.document_mask": True, "train.global_batch_size": 8}, "run"),
    ("1b_cudnn_remat_none", "llama_1b", {**FAST, "model.remat_policy": "none", "train.global_batch_size": 8}, "run"),
    ("1b_cudnn_batch16", "llama_1b", {**FAST, "train.global_batch_size": 16}, "run"),
    ("1b_cudnn_batch16_chunked_loss", "llama_1b", {**FAST, "train.global_batch_size": 16, "train.loss_chunk_size": 512}, "run"),
    ("fit_3b_save_linear", "llama_3b", {**FAST, "train.global_batch_size": 4}, "fit"),
    ("fit_7b_full", "llama_7b", {**FAST, "model.remat_policy": "full", "train.global_batch_size": 1}, "fit"),
    ("fit_7b_bf16_weights", "llama_7b", {**FAST, "model.param_dtype": "bfloat16", "model.remat_policy": "full",
                                         "train.global_batch_size": 1}, "fit"),
]
SUITES = {"h100": H100_SUITE}
# The fast config's per-step losses must match the reference's within one bf16 rounding step (2^-8, relative).
# Measured on the 2-core CPU box (tiny preset, 10 steps, bf16 + save_linear vs float32): 3.7e-5.
LOSS_RTOL = 2.0**-8


def loss_difference(fast: dict, reference: dict) -> float:
    """Largest relative difference between two runs' per-step losses (the same batches from the same init)."""
    a, b = np.asarray(fast["losses"]), np.asarray(reference["losses"])
    if a.shape != b.shape:
        raise ValueError(f"runs of {a.size} and {b.size} steps cannot be compared; run both with the same --steps")
    return float(np.max(np.abs(a - b) / np.abs(b)))


def append_json_line(path: str | None, result: dict) -> None:
    """Append `result` as one JSON line to `path` (nothing when None)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(result) + "\n")


def run_entry(preset: str, overrides: dict, kind: str, steps: int, warmup: int) -> dict:
    """The figures of one suite entry (see H100_SUITE)."""
    decode = {k.removeprefix("decode."): v for k, v in overrides.items() if k.startswith("decode.")}
    config = preset_config(preset, **{k: v for k, v in overrides.items() if not k.startswith("decode.")})
    if kind == "decode":
        from llama_jax.perf.decode_bench import measure_decode

        return measure_decode(config, **decode)
    return measure(config, steps, warmup) if kind == "run" else fit(config)


def run_suite(entries, steps: int, warmup: int, out: str | None, budget_s: float) -> list[dict]:
    """Run each entry in order (fresh compile each), appending a JSON line per entry to `out`; entries that
    would start after `budget_s` seconds are skipped, and one that fails (e.g. out of memory) records its error."""
    start = time.perf_counter()
    results = []
    for name, preset, overrides, kind in entries:
        if time.perf_counter() - start > budget_s:
            result = {"name": name, "skipped": f"time budget of {budget_s:.0f} s spent"}
        else:
            try:
                result = {"name": name, **run_entry(preset, overrides, kind, steps, warmup)}
            except Exception as error:  # noqa: BLE001 -- one failed entry must not lose the others' figures
                result = {"name": name, "error": f"{type(error).__name__}: {str(error)[:500]}"}
        print(json.dumps(result), flush=True)
        results.append(result)
        jax.clear_caches()  # the next entry compiles afresh; drop this one's executables and buffers
        gc.collect()
        append_json_line(out, result)
    return results


def decode(config, FLAGS) -> None:
    """--mode=decode: one line and one JSON line per batch size."""
    from llama_jax.perf.decode_bench import format_decode, measure_decode

    try:
        batch_sizes = [int(b) for b in FLAGS.batch_sizes.split(",")]
    except ValueError:
        raise cli.UsageError(f"--batch_sizes={FLAGS.batch_sizes!r} is not comma-separated integers") from None
    print("model", json.dumps(config.model.to_dict()))
    for batch in batch_sizes:
        result = measure_decode(config, batch, FLAGS.prompt_len, FLAGS.new_tokens)
        print(format_decode(result))
        print(json.dumps(result), flush=True)
        append_json_line(FLAGS.out, result)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.suite:
        run_suite(SUITES[FLAGS.suite], FLAGS.steps, FLAGS.warmup, FLAGS.out, FLAGS.budget_s)
        return
    config = FLAGS.config
    if config is None:
        raise cli.UsageError("give --config=FILE or --config=PRESET (or --suite)")
    if FLAGS.mode == "decode":
        decode(config, FLAGS)
        return
    print("model", json.dumps(config.model.to_dict()))
    print("train", json.dumps(config.train.to_dict()))
    result = measure(config, FLAGS.steps, FLAGS.warmup)
    print(format_result(result))
    print(json.dumps(result))
    append_json_line(FLAGS.out, result)


def define_flags() -> None:
    """The command's flags (llama_jax.perf.aot imports this module and defines its own)."""
    config_flag()
    flags.DEFINE_integer("steps", 10, "timed training steps (after the warm-up)")
    flags.DEFINE_integer("warmup", 2, "untimed steps first; the first compiles")
    flags.DEFINE_enum("suite", None, sorted(SUITES), "run a whole benchmark suite instead of --config")
    flags.DEFINE_string("out", None, "append each result as a JSON line to this file")
    flags.DEFINE_float("budget_s", 480.0, "with --suite: start no entry after this many seconds")
    flags.DEFINE_enum("mode", "train", ["train", "decode"], "time training steps or generation")
    flags.DEFINE_string("batch_sizes", "1,64", "--mode=decode: prompts per batch, comma-separated")
    flags.DEFINE_integer("prompt_len", 128, "--mode=decode: tokens per prompt")
    flags.DEFINE_integer("new_tokens", 128, "--mode=decode: tokens generated per prompt")


def run() -> None:
    """The command: its flags, then `main`."""
    define_flags()
    cli.run_absl(main, argv=expand_preset_argv())


if __name__ == "__main__":
    run()
