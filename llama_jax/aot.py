"""Does a config fit a TPU slice, and how fast would it run? Compile the real training step for the slice from
this CPU machine (libtpu, `jax.experimental.topologies`) and read XLA's memory and cost analyses.

    python -m llama_jax.aot --config=llama_65b --topology=v5p:4x8x8 --config.train.microbatches=4

`--config` is a preset name (the paper's recipe from benchmarks/configs/preset.py: bf16, save_linear remat,
4M-token batch) or an experiment file; `--config.*` overrides any field. Prints per-chip memory (arguments,
outputs, temporaries) against the chip's HBM, XLA's FLOPs per step next to the model-FLOPs formula
(llama_jax.flops), and the step time and tokens/s the slice would reach at `--mfu`, then one line of JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
from absl import flags

from llama_jax import cli, flops
from llama_jax.bench import config_flag, expand_preset_argv

GIB = 1024**3
# HBM per chip (datasheets). A v4 chip's two TensorCores compile as one "megacore" device, as JAX runs them.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}



def topology_devices(topology: str) -> list:
    """Compile-only devices of a TPU slice, e.g. 'v5p:4x8x8' (256 chips), one device per chip."""
    generation, _, shape = topology.partition(":")
    if generation not in HBM_GIB or not shape:
        raise ValueError(f"topology={topology!r}: expected GENERATION:AxB[xC] with GENERATION one of {sorted(HBM_GIB)}")
    from jax.experimental import topologies  # needs libtpu (the `tpu` extra), not a TPU

    # Compile-only: libtpu's machine-wide lock is for real chips (several compiles may run at once), and there
    # is no TPU VM metadata server to ask for the host's slice (these keep libtpu from warning that it found none).
    for name, value in (("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("TPU_SKIP_MDS_QUERY", "1"),
                        ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_ACCELERATOR_TYPE", "v5p-8")):
        os.environ.setdefault(name, value)
    extra = {"chip_config_name": "megacore"} if generation == "v4" else {}
    return topologies.get_topology_desc(topology_name=topology, platform="tpu", **extra).devices


@dataclasses.dataclass
class FitReport:
    """What one compile says about one config on one slice; memory per chip in bytes, FLOPs per chip per step."""

    topology: str
    chips: int
    device_kind: str
    mesh: dict[str, int]
    model: str
    params: int
    remat: str
    attention: str
    global_batch: int
    seq_len: int
    microbatches: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    hbm_bytes: int
    xla_flops: float
    model_flops: float
    mfu: float
    compile_s: float

    @property
    def total_bytes(self) -> int:
        """Peak live bytes on a chip: arguments and outputs (donated outputs reuse argument buffers),
        temporaries and the program."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.hbm_bytes

    @property
    def step_s(self) -> float:
        """Projected step time at `mfu` of the chip's dense bf16 peak."""
        return self.model_flops / (flops.peak_flops(self.device_kind) * self.mfu)

    @property
    def tokens_per_s_per_chip(self) -> float:
        return self.global_batch * self.seq_len / self.chips / self.step_s

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes, "fits": self.fits,
                "step_s": self.step_s, "tokens_per_s_per_chip": self.tokens_per_s_per_chip}


def compile_for_topology(config, topology: str, mfu: float = 0.5) -> FitReport:
    """Lower and compile `make_train_step(config, mesh)` for `topology`; `auto` attention becomes splash."""
    from llama_jax import sharding, train_step  # the training core; imported here to keep `--help` fast

    devices = topology_devices(topology)
    generation = topology.partition(":")[0]
    if config.model.attention_impl == "auto":  # resolve() would see this CPU's backend, not the TPU's
        config = config.copy_and_resolve_references()
        config.model.attention_impl = "splash"
    mesh = sharding.make_mesh(config, devices)
    model = train_step.model_config(config)
    state = train_step.abstract_state(config, mesh)
    batch = train_step.abstract_batch(config, mesh)
    # A compile-only executable can be neither stored in nor loaded from a persistent compilation cache.
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        start = time.perf_counter()
        compiled = train_step.make_train_step(config, mesh).lower(state, batch).compile()
        compile_s = time.perf_counter() - start
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)

    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    tokens = config.train.global_batch_size * config.train.seq_len
    params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params))
    return FitReport(
        topology=topology,
        chips=len(devices),
        device_kind=devices[0].device_kind,
        mesh=dict(mesh.shape),
        model=str(config.get("model_preset", "custom")),
        params=params,
        remat=model.remat_policy,
        attention=model.attention_impl,
        global_batch=config.train.global_batch_size,
        seq_len=config.train.seq_len,
        microbatches=config.train.microbatches,
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        hbm_bytes=HBM_GIB[generation] * GIB,
        xla_flops=float(cost.get("flops", float("nan"))),
        model_flops=flops.train_flops_per_token(model, config.train.seq_len) * tokens / len(devices),
        mfu=mfu,
        compile_s=compile_s,
    )


def format_report(r: FitReport) -> str:
    """A human-readable account of one FitReport."""
    mesh = " ".join(f"{k}={v}" for k, v in r.mesh.items())
    return "\n".join([
        f"{r.model} ({r.params / 1e9:.2f}B params) on {r.topology}: {r.chips} x {r.device_kind}, mesh {mesh}",
        f"  batch {r.global_batch} x {r.seq_len} tokens in {r.microbatches} microbatch(es); remat {r.remat}; "
        f"attention {r.attention}; compiled in {r.compile_s:.0f} s",
        f"  memory per chip  arguments {r.argument_bytes / GIB:.2f} GiB, outputs {r.output_bytes / GIB:.2f} GiB "
        f"(aliased {r.alias_bytes / GIB:.2f}), temporaries {r.temp_bytes / GIB:.2f} GiB",
        f"                   total {r.total_bytes / GIB:.2f} GiB of {r.hbm_bytes / GIB:.0f} GiB HBM: "
        + ("fits" if r.fits else "DOES NOT FIT"),
        f"  FLOPs per chip per step  model (6N + attention) {r.model_flops:.4g}; XLA cost analysis {r.xla_flops:.4g} "
        "(counts a scanned or accumulated loop body once)",
        f"  at {r.mfu:.0%} MFU: {r.step_s:.2f} s per step, {r.tokens_per_s_per_chip:,.0f} tokens/s per chip, "
        f"{r.tokens_per_s_per_chip * r.chips / 1e6:.2f}M tokens/s in all",
    ])


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.config is None:
        raise cli.UsageError("give --config=FILE or --config=PRESET, e.g. --config=llama_7b --topology=v5p:4x4x4")
    report = compile_for_topology(FLAGS.config, FLAGS.topology, FLAGS.mfu)
    print(format_report(report))
    print(json.dumps(report.to_dict()))


if __name__ == "__main__":
    config_flag()  # flags are defined only when run as a program, so importing this module defines none
    flags.DEFINE_string("topology", "v5p:4x4x4", "slice as libtpu names it, GENERATION:AxBxC (v5p:4x4x4 = v5p-128)")
    flags.DEFINE_float("mfu", 0.5, "model FLOPs utilisation assumed for the projected step time")
    cli.run_absl(main, argv=expand_preset_argv())
