"""Where our training step's time goes on this CPU: the real `make_train_step`, traced with jax.profiler, each
XLA:CPU operation it ran attributed to the part of the model or optimizer it comes from.

    python -m benchmarks.step_profile                                    # the tiny preset (batch 16 x 128)
    python -m benchmarks.step_profile --config=experiments/configs/cpu_isoflop.py:size=d32l2,tokens=3.11e5,lr=0.005657
    python -m benchmarks.step_profile --steps=10 --top=25 --out=results.jsonl

After `--warmup` untimed steps, `--steps` steps run under `jax.profiler.trace`. XLA:CPU records every thunk it
executes (a fusion, a dot, a copy) on its worker threads; each is matched by name to the compiled HLO, whose
metadata names the JAX operation it came from (`jit(train_step)/.../attention/dot_general`, a transpose(...) for
the backward pass). Thread time is summed per thunk and divided by the steps: with two cores the thread time per
step can exceed the wall time per step, and the difference between wall time and thread time over the cores is
time no XLA thunk ran (dispatch, Python, waiting). Groups:
- part: embedding, attention (projections, RoPE, scores), feed_forward, norms, output (the vocabulary projection
  and the loss), optimizer (clipping and AdamW), other;
- pass: forward, backward, update;
- kind: matmul (dot and YNNPACK fusions), copy/transpose, elementwise/reduction (loop and input fusions), other.
Prints the tables and the top thunks, then one line of JSON.
"""

from __future__ import annotations

import collections
import datetime
import glob
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from llama_jax import cli
from llama_jax.platforms import cpu_model

TINY = str(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tiny.py")
DISTINCT_BATCHES = 4

# (part, substrings of a JAX op_name), the first that matches wins. The vocabulary projection is the model's own
# einsum (op_name ".../jvp(LLaMA)/dot_general"), the loss is outside the model (".../jvp()/..."), and the
# optimizer's operations (clipping, AdamW, the metrics) lie outside both jvp and transpose.
PARTS = (
    ("norms", ("norm",)),  # first: attention_norm and ffn_norm are norms
    ("attention", ("attention",)),
    ("feed_forward", ("feed_forward",)),
    ("embedding", ("tok_embeddings", "embed")),
)
# Events on XLA's threads that contain the thunks rather than being one: not counted (their time is the thunks').
WRAPPERS = ("ThreadpoolListener", "end: ", "ThunkExecutor", "SlinkyThreadPool")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+.*?\s([a-z][\w\-]*)\(")
_KIND = re.compile(r"kind=(k\w+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_index(hlo_text: str) -> dict[str, dict[str, str]]:
    """Instruction name -> {opcode, kind (fusions), op_name} of every instruction in the compiled module's text."""
    index = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        kind = _KIND.search(line)
        op_name = _OP_NAME.search(line)
        index[name] = {"opcode": opcode, "kind": kind.group(1) if kind else "",
                       "op_name": op_name.group(1) if op_name else ""}
    return index


def classify(name: str, info: dict[str, str] | None) -> tuple[str, str, str]:
    """(part, pass, kind) of the thunk `name` with HLO facts `info` (None when the HLO does not name it)."""
    op_name = (info or {}).get("op_name", "")
    opcode = (info or {}).get("opcode", "")
    lowered = name.lower()
    if opcode in ("dot", "convolution") or "ynn" in lowered or lowered.startswith("dot"):
        kind = "matmul"
    elif opcode in ("copy", "transpose") or "copy" in lowered or "transpose" in lowered:
        kind = "copy/transpose"
    elif opcode == "fusion" or opcode in ("reduce", "add", "multiply", "exponential", "select", "broadcast"):
        kind = "elementwise/reduction"
    else:
        kind = "other"
    if "transpose(" in op_name:
        direction = "backward"
    elif "jvp(" in op_name:
        direction = "forward"
    else:
        direction = "update" if op_name else "unmatched"
    part = next((p for p, keys in PARTS if any(k in op_name.lower() for k in keys)), None)
    if part is None:
        if "LLaMA" in op_name:
            part = "output" if "dot_general" in op_name else "model, other"
        elif "jvp()" in op_name:
            part = "output"  # the loss: log-softmax and cross-entropy over the vocabulary
        else:
            part = "optimizer" if op_name else "unmatched"
    return part, direction, kind


def thunk_times(trace_dir: str) -> dict[str, float]:
    """Thread nanoseconds per thunk name summed over the trace's XLA:CPU worker threads."""
    from jax.profiler import ProfileData

    paths = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    if not paths:
        raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in ProfileData.from_file(paths[0]).planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                if event.name.startswith(WRAPPERS):
                    continue
                totals[event.name] += event.duration_ns
    return dict(totals)


def profile(config, steps: int, warmup: int) -> dict:
    """Trace `steps` training steps of `config` after `warmup`; returns the grouped thread times per step."""
    import jax

    from llama_jax import sharding
    from llama_jax.train import step as train_step
    from llama_jax.train.synthetic import SyntheticStream

    mesh = sharding.make_mesh(config)
    step_fn = train_step.make_train_step(config, mesh)
    run = train_step.setup(config, mesh)
    stream = SyntheticStream(config)
    batches = [run.device_batch(next(stream)) for _ in range(DISTINCT_BATCHES)]
    state = run.init_state(jax.random.PRNGKey(config.seed))
    compiled = step_fn.lower(state, batches[0]).compile()
    index = hlo_index(compiled.as_text())
    for i in range(warmup):
        state, _ = compiled(state, batches[i % DISTINCT_BATCHES])
    jax.block_until_ready(state)
    trace_dir = tempfile.mkdtemp(prefix="step-profile-")
    with jax.profiler.trace(trace_dir):
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = compiled(state, batches[i % DISTINCT_BATCHES])
        jax.block_until_ready(state)
        wall = (time.perf_counter() - start) / steps
    times = {name: ns / steps / 1e6 for name, ns in thunk_times(trace_dir).items()}  # ms per step
    groups: dict[str, dict[str, float]] = {"part": {}, "pass": {}, "kind": {}}
    matched = 0.0
    top = []
    for name, ms in times.items():
        info = index.get(name)
        matched += ms if info else 0.0
        part, direction, kind = classify(name, info)
        for group, key in (("part", part), ("pass", direction), ("kind", kind)):
            groups[group][key] = groups[group].get(key, 0.0) + ms
        top.append({"thunk": name, "ms": ms, "part": part, "pass": direction, "kind": kind,
                    "op_name": (info or {}).get("op_name", "")[-120:]})
    top.sort(key=lambda row: -row["ms"])
    total = sum(times.values())
    return {"wall_ms_per_step": wall * 1e3, "thread_ms_per_step": total, "thunks": len(times),
            "matched_share": matched / total if total else 0.0,
            "groups": {g: dict(sorted(v.items(), key=lambda kv: -kv[1])) for g, v in groups.items()}, "top": top,
            "trace_dir": trace_dir}


def format_report(result: dict, top: int) -> str:
    total = result["thread_ms_per_step"]
    lines = [f"{result['wall_ms_per_step']:.1f} ms wall per step; {total:.1f} ms of XLA thread time per step over "
             f"{result['threads']} cores ({total / result['threads'] / result['wall_ms_per_step']:.0%} of the "
             f"cores' wall time); {result['thunks']} thunks, {result['matched_share']:.0%} of the time matched to HLO"]
    for group, values in result["groups"].items():
        lines.append(f"by {group}: " + ", ".join(f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in values.items()))
    lines.append(f"top {top} thunks (ms per step, share, part/pass/kind, JAX op):")
    for row in result["top"][:top]:
        lines.append(f"  {row['ms']:7.2f} {row['ms'] / total:5.1%}  {row['thunk'][:40]:40s} "
                     f"{row['part']}/{row['pass']}/{row['kind']}  {row['op_name'][-70:]}")
    return "\n".join(lines)


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", TINY, "experiment config file (default: the tiny preset's)")
    flags.DEFINE_integer("steps", 5, "traced training steps")
    flags.DEFINE_integer("warmup", 3, "untraced steps first (the first compiles)")
    flags.DEFINE_integer("threads", 2, "cores for the process (benchmarks.torch_peer.pin_threads)")
    flags.DEFINE_integer("top", 20, "thunks listed")
    flags.DEFINE_string("out", None, "append the JSON line to this file")


def main(argv) -> None:
    del argv
    from benchmarks.torch_peer import pin_threads

    FLAGS = flags.FLAGS
    cores = pin_threads(FLAGS.threads)
    config = FLAGS.config
    result = profile(config, FLAGS.steps, FLAGS.warmup)
    result["threads"], result["cpu"] = len(cores), cpu_model()
    result["config"] = {"model": dict(config.model), "batch": config.train.global_batch_size,
                        "seq_len": config.train.seq_len, "vocab": config.model.vocab_size}
    result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["command"] = "python -m benchmarks.step_profile " + " ".join(sys.argv[1:])
    print(format_report(result, FLAGS.top))
    line = json.dumps({k: v for k, v in result.items() if k != "trace_dir"}, default=str)
    print(line)
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    define_flags()
    cli.run_absl(main)
