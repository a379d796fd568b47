"""Does a config fit a TPU slice, and how fast would it run? Compile the real training step for the slice from
this CPU machine (libtpu, `jax.experimental.topologies`) and read XLA's memory and cost analyses.

    python -m llama_jax.aot --config=llama_65b --topology=v5p:4x8x8 --config.train.microbatches=4
    python -m llama_jax.aot --config=llama_65b --topology=v5p-512 --fit_search

`--config` is a preset name (the paper's recipe from benchmarks/configs/preset.py: bf16, save_linear remat,
4M-token batch) or an experiment file; `--config.*` overrides any field. `--topology` is libtpu's name
(`v5p:4x8x8`) or Cloud's (`v5p-512`: v4 and v5p count TensorCores, two per chip; v5e and v6e count chips).
Prints per-chip memory (arguments, outputs, temporaries) against the chip's HBM, XLA's FLOPs per step next to
the model-FLOPs formula (llama_jax.perf.flops), and the step time and tokens/s the slice would reach at `--mfu`,
then one line of JSON. A config that does not fit is a result too: the memory XLA says it needs (from its
RESOURCE_EXHAUSTED message when the compile stops) against the HBM. `--fit_search` finds the fewest
microbatches (divisors of the per-chip batch) and then the lightest rematerialisation (none, save_linear,
full) with which the config fits; every compile's result is cached in experiments/results/aot_fit.jsonl, keyed
by everything that decides memory, so a search already made costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time

import jax
from absl import flags

from llama_jax import cli
from llama_jax.perf import flops
from llama_jax.perf.train_bench import config_flag, expand_preset_argv

GIB = 1024**3
# HBM per chip (datasheets). A v4 chip's two TensorCores compile as one "megacore" device, as JAX runs them.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}



# What libtpu reports as device_kind, by generation (llama_jax.perf.flops knows their peaks).
DEVICE_KINDS = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}
# Cloud accelerator-type prefixes: v5e slices are "v5litepod-N".
CLOUD_PREFIX = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}  # what the Cloud name's number counts, per chip


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice: generation ("v5p"), chip grid (4, 8, 8), and its libtpu and Cloud names."""

    generation: str
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def libtpu_name(self) -> str:
        return f"{self.generation}:{'x'.join(map(str, self.shape))}"

    @property
    def cloud_name(self) -> str:
        return f"{CLOUD_PREFIX[self.generation]}-{self.chips * CORES_PER_CHIP[self.generation]}"

    @property
    def device_kind(self) -> str:
        return DEVICE_KINDS[self.generation]

    @property
    def hbm_bytes(self) -> int:
        return HBM_GIB[self.generation] * GIB


def parse_topology(name: str) -> Topology:
    """'v5p:4x8x8' (libtpu) or 'v5p-512' (Cloud accelerator type) -> Topology. A Cloud name takes the standard
    slice shape for its chip count (Cloud's tables: v5p-512 = 256 chips = 4x8x8, v5litepod-16 = 4x4)."""
    aliases = {"v5litepod": "v5e", "v5lite": "v5e"}
    generations = sorted(DEVICE_KINDS)
    if ":" in name:
        generation, _, shape = name.partition(":")
        generation = aliases.get(generation, generation)
        if generation in DEVICE_KINDS and re.fullmatch(r"\d+(x\d+){1,2}", shape):
            return Topology(generation, tuple(int(x) for x in shape.split("x")))
    elif match := re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name):
        generation = aliases.get(match[1], match[1])
        count = int(match[2])
        if generation in DEVICE_KINDS:
            chips, rest = divmod(count, CORES_PER_CHIP[generation])
            if rest or chips < 1 or chips & (chips - 1):
                raise ValueError(f"topology={name!r}: {count} {'TensorCores' if CORES_PER_CHIP[generation] > 1 else 'chips'}"
                                 f" is not a power-of-two slice; give libtpu's shape, e.g. {generation}:4x4x8")
            return Topology(generation, slice_shape(chips, 2 if generation in ("v5e", "v6e") else 3))
    raise ValueError(f"topology={name!r}: expected libtpu's GENERATION:AxB[xC] (e.g. v5p:4x8x8) or Cloud's "
                     f"GENERATION-N (e.g. v5p-512), GENERATION one of {generations}")


def slice_shape(chips: int, dims: int) -> tuple[int, ...]:
    """Cloud's standard shape of a power-of-two slice: 3-D from 2x2x1 (4 chips; 8 = 2x2x2, 16 = 2x2x4, ...,
    256 = 4x8x8, 512 = 8x8x8), 2-D from 1x1 (4 = 2x2, 8 = 2x4, 16 = 4x4, 256 = 16x16); each doubling doubles
    the last of the smallest sides."""
    if dims == 3 and chips < 4:
        raise ValueError(f"a 3-D slice has at least 4 chips (2x2x1), not {chips}")
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    while math.prod(shape) < chips:
        smallest = min(shape)
        shape[max(i for i, side in enumerate(shape) if side == smallest)] *= 2
        shape.sort()
    return (2, 2, 1) if dims == 3 and chips == 4 else tuple(shape)


def topology_devices(topology: str | Topology, slices: int = 1) -> list:
    """Compile-only devices of a TPU slice (or of `slices` slices joined over DCN), e.g. 'v5p:4x8x8' or
    'v5p-512' (256 chips), one device per chip."""
    if isinstance(topology, str):
        topology = parse_topology(topology)
    from jax.experimental import topologies  # needs libtpu (the `tpu` extra), not a TPU

    # Compile-only: libtpu's machine-wide lock is for real chips (several compiles may run at once), and there
    # is no TPU VM metadata server to ask for the host's slice (these keep libtpu from warning that it found none).
    for name, value in (("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("TPU_SKIP_MDS_QUERY", "1"),
                        ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_ACCELERATOR_TYPE", "v5p-8")):
        os.environ.setdefault(name, value)
    extra = {"chip_config_name": "megacore"} if topology.generation == "v4" else {}
    if slices > 1:
        extra["num_slices"] = slices
    return topologies.get_topology_desc(topology_name=topology.libtpu_name, platform="tpu", **extra).devices


@dataclasses.dataclass
class FitReport:
    """What one compile says about one config on one slice; memory per chip in bytes, FLOPs per chip per step.
    When XLA stopped the compile for lack of memory, `xla_error` is its message, `needed_bytes` what it says the
    chip needs at least (0 when it says no figure), and the other byte counts are 0."""

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
    needed_bytes: int = 0
    xla_error: str = ""

    @property
    def total_bytes(self) -> int:
        """Peak live bytes on a chip: arguments and outputs (donated outputs reuse argument buffers),
        temporaries and the program; or what XLA said it needs when it stopped the compile."""
        if self.xla_error:
            return self.needed_bytes
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return not self.xla_error and self.total_bytes <= self.hbm_bytes

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


# XLA's units in "Used 21.95G of 15.48G hbm" and "Total hbm usage >= 22.47G" (binary multiples).
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# What XLA's RESOURCE_EXHAUSTED messages say a chip needs, most complete first: the total ("Total hbm usage >=
# 65.05G"), the program ("Used 63.80G of 30.75G hbm"), the temporaries ("the total memory required for HLO
# temporaries (119.75G) exceeds available HBM (95.74G)").
NEEDED_PATTERNS = (r"Total hbm usage >= ([\d.]+)([KMGT]?)", r"Used ([\d.]+)([KMGT]?)i?B? of [\d.]+[KMGT]?i?B? hbm",
                   r"required for [\w ]+\(([\d.]+)([KMGT]?)i?B?\) exceeds available HBM")


def needed_hbm_bytes(message: str) -> int | None:
    """The bytes a chip needs at least by XLA's out-of-HBM message (NEEDED_PATTERNS), or None when the message
    is not an out-of-HBM report; 0 when it is one without a figure."""
    if "RESOURCE_EXHAUSTED" not in message or "hbm" not in message.lower():
        return None
    for pattern in NEEDED_PATTERNS:
        if match := re.search(pattern, message):
            return round(float(match[1]) * UNITS[match[2]])
    return 0


def compile_for_topology(config, topology: str | Topology, mfu: float = 0.5, *, slices: int = 1,
                         hbm_bytes: int | None = None) -> FitReport:
    """Lower and compile `make_train_step(config, mesh)` for `topology` (`slices` of it over DCN), against
    `hbm_bytes` per chip (default: the chip's HBM); `auto` attention becomes splash. Running out of HBM is a
    FitReport that does not fit, not an exception."""
    from llama_jax import sharding
    from llama_jax.train import step as train_step  # the training core; imported here to keep `--help` fast

    topology = parse_topology(topology) if isinstance(topology, str) else topology
    devices = topology_devices(topology, slices)
    config = config.copy_and_resolve_references()
    if config.model.attention_impl == "auto":  # resolve() would see this CPU's backend, not the TPU's
        config.model.attention_impl = "splash"
    tpu = train_step.model_config(config).for_platform("tpu")  # the same for the automatic XLA:CPU settings
    config.model.scan_unroll, config.model.linear_tokens = tpu.scan_unroll, tpu.linear_tokens
    if slices > 1:
        config.mesh.dcn_data = slices
    mesh = sharding.make_mesh(config, devices)
    run = train_step.setup(config, mesh)
    model, state = run.model, run.abstract_state
    batch = run.abstract_batch()
    tokens = config.train.tokens_per_step
    fields = dict(
        topology=topology.libtpu_name if slices == 1 else f"{slices}x{topology.libtpu_name}",
        chips=len(devices),
        device_kind=devices[0].device_kind,
        mesh=dict(mesh.shape),
        model=str(config.get("model_preset", "custom")),
        params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params)),
        remat=model.remat_policy,
        attention=model.attention_impl,
        global_batch=config.train.global_batch_size,
        seq_len=config.train.seq_len,
        microbatches=config.train.microbatches,
        hbm_bytes=topology.hbm_bytes if hbm_bytes is None else hbm_bytes,
        model_flops=flops.train_flops_per_token(model, config.train.seq_len) * tokens / len(devices),
        mfu=mfu,
    )
    # A compile-only executable can be neither stored in nor loaded from a persistent compilation cache.
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    start = time.perf_counter()
    try:
        compiled = train_step.make_train_step(config, mesh).lower(state, batch).compile()
    except Exception as error:  # XLA's out-of-memory is a result; anything else is not
        needed = needed_hbm_bytes(str(error))
        if needed is None:
            raise
        return FitReport(**fields, argument_bytes=0, output_bytes=0, alias_bytes=0, temp_bytes=0, code_bytes=0,
                         xla_flops=float("nan"), compile_s=time.perf_counter() - start, needed_bytes=needed,
                         xla_error=" ".join(str(error).split("\n")[0].split())[:300])
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return FitReport(
        **fields,
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        xla_flops=float(cost.get("flops", float("nan"))),
        compile_s=compile_s,
    )


# ------------------------------------------------------------------------------------------------ fit search
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
FIT_CACHE = os.path.join(ROOT, "experiments", "results", "aot_fit.jsonl")
REMAT_ORDER = ("none", "save_linear", "full")  # least recomputation first


def memory_key(config, topology: Topology, slices: int) -> dict:
    """Everything a compile's memory depends on: the model (shape, dtypes, remat, attention), batch, sequence,
    microbatches, loss chunking, document mask, mesh and its rules, the slice, and the JAX version. Not the token
    count or the learning rate."""
    train = config.train
    return {"model": config.model.to_dict(), "global_batch": train.global_batch_size, "seq_len": train.seq_len,
            "microbatches": train.microbatches, "loss_chunk_size": train.loss_chunk_size,
            "document_mask": bool(train.document_mask), "mesh": json.loads(config.mesh.to_json()),
            "topology": topology.libtpu_name, "slices": slices, "jax": jax.__version__}


def cached_compile(config, topology: Topology, cache_path: str = FIT_CACHE, mfu: float = 0.5, *, slices: int = 1,
                   hbm_bytes: int | None = None, compile_missing: bool = True, log=None) -> FitReport | None:
    """compile_for_topology, or its earlier result from the JSON-lines cache at `cache_path` (appended to); None
    when it is not cached and not `compile_missing`. A cached report is judged against `hbm_bytes` (default: the
    chip's HBM), which is not part of the key: XLA compiles for the real chip either way."""
    setting = memory_key(config, topology, slices)
    key = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()
    hbm = topology.hbm_bytes if hbm_bytes is None else hbm_bytes
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            for line in f:
                entry = json.loads(line) if line.strip() else {}
                if entry.get("key") == key:
                    return FitReport(**{**entry["report"], "mfu": mfu, "hbm_bytes": hbm})
    if not compile_missing:
        return None
    if log:
        log(f"compiling {setting['model'].get('dim')}-dim model, {setting['microbatches']} microbatch(es), remat "
            f"{setting['model']['remat_policy']} for {topology.libtpu_name} (minutes on a CPU; cached afterwards)")
    report = compile_for_topology(config, topology, mfu, slices=slices, hbm_bytes=hbm)
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    with open(cache_path, "a") as f:
        f.write(json.dumps({"key": key, "setting": setting, "report": dataclasses.asdict(report),
                            "date": time.strftime("%Y-%m-%d")}) + "\n")
    return report


def microbatch_choices(config, topology: Topology, slices: int = 1) -> list[int]:
    """Microbatch counts the batch allows on the slice: the divisors of the per-chip batch (global batch over the
    data-parallel size), fewest first."""
    from llama_jax import sharding

    config = config.copy_and_resolve_references()
    if slices > 1:
        config.mesh.dcn_data = slices
    mesh = sharding.make_mesh(config, topology_devices(topology, slices))
    per_chip, rest = divmod(config.train.global_batch_size, sharding.data_parallel_size(mesh, sharding.logical_rules(config)))
    if rest or per_chip < 1:
        raise ValueError(f"train.global_batch_size={config.train.global_batch_size} does not split over the "
                         f"data-parallel axes of {topology.libtpu_name}'s mesh {dict(mesh.shape)}")
    return [k for k in range(1, per_chip + 1) if per_chip % k == 0]


def fit_search(config, topology: str | Topology, cache_path: str = FIT_CACHE, mfu: float = 0.5, *, slices: int = 1,
               hbm_bytes: int | None = None, compile_missing: bool = True, log=None) -> FitReport | None:
    """The report of the setting with the fewest microbatches, then the least rematerialisation (none,
    save_linear, full), with which `config` fits the slice; when none fits, the report of the lightest setting
    (most microbatches, full remat): what the config needs at the least. Each microbatch count is tried with
    full remat first, so a count that cannot fit costs one compile. None when a compile the search needs is
    not cached and not `compile_missing`."""
    topology = parse_topology(topology) if isinstance(topology, str) else topology

    def report(microbatches: int, remat: str) -> FitReport | None:
        setting = config.copy_and_resolve_references()
        setting.train.microbatches, setting.model.remat_policy = microbatches, remat
        return cached_compile(setting, topology, cache_path, mfu, slices=slices, hbm_bytes=hbm_bytes,
                              compile_missing=compile_missing, log=log)

    lightest = None
    for microbatches in microbatch_choices(config, topology, slices):
        lightest = report(microbatches, "full")
        if lightest is None or not lightest.fits:
            if lightest is None:
                return None
            continue
        for remat in REMAT_ORDER[:-1]:
            candidate = report(microbatches, remat)
            if candidate is None or candidate.fits:
                return candidate
        return lightest
    return lightest


def format_report(r: FitReport) -> str:
    """A human-readable account of one FitReport."""
    mesh = " ".join(f"{k}={v}" for k, v in r.mesh.items())
    head = [
        f"{r.model} ({r.params / 1e9:.2f}B params) on {r.topology}: {r.chips} x {r.device_kind}, mesh {mesh}",
        f"  batch {r.global_batch} x {r.seq_len} tokens in {r.microbatches} microbatch(es); remat {r.remat}; "
        f"attention {r.attention}; compiled in {r.compile_s:.0f} s",
    ]
    if r.xla_error:
        need = f"needs at least {r.needed_bytes / GIB:.2f} GiB" if r.needed_bytes else "needs more than its HBM"
        return "\n".join([*head, f"  memory per chip  {need} of {r.hbm_bytes / GIB:.0f} GiB HBM: DOES NOT FIT "
                                  f"(XLA: {r.xla_error})"])
    return "\n".join([
        *head,
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
    topology = parse_topology(FLAGS.topology)
    hbm = None if FLAGS.hbm_gib is None else round(FLAGS.hbm_gib * GIB)
    if FLAGS.fit_search:
        def log(line):
            print(line, flush=True)

        report = fit_search(FLAGS.config, topology, FLAGS.fit_cache, FLAGS.mfu, slices=FLAGS.slices, hbm_bytes=hbm,
                            log=log)
        print("fits with:" if report.fits else "does not fit with any microbatch count or remat policy; the least:")
    else:
        report = compile_for_topology(FLAGS.config, topology, FLAGS.mfu, slices=FLAGS.slices, hbm_bytes=hbm)
    print(format_report(report))
    print(json.dumps(report.to_dict()))


def define_flags() -> None:
    """The command's flags; defined only when run as a program, so importing this module defines none."""
    config_flag()
    flags.DEFINE_string("topology", "v5p:4x4x4", "slice: libtpu's GENERATION:AxBxC (v5p:4x4x4) or Cloud's v5p-128")
    flags.DEFINE_float("mfu", 0.5, "model FLOPs utilisation assumed for the projected step time")
    flags.DEFINE_integer("slices", 1, "slices joined over DCN (multi-slice; mesh.dcn_data)")
    flags.DEFINE_bool("fit_search", False, "find the fewest microbatches, then the least remat, that fit")
    flags.DEFINE_float("hbm_gib", None, "HBM per chip to fit in, GiB (default: the chip's)")
    flags.DEFINE_string("fit_cache", FIT_CACHE, "JSON lines of earlier compiles (--fit_search reads and appends)")


def run() -> None:
    """The command: its flags, then `main`."""
    define_flags()
    cli.run_absl(main, argv=expand_preset_argv())


if __name__ == "__main__":
    run()
