"""The device mesh and the logical axis rules: the one place where model axes meet mesh axes.

The model names logical axes only (batch, length, embed, heads, ...); `config.mesh.rules` maps each onto
mesh axes. Flax resolves rules in order and never uses a mesh axis twice in one array, so the activation
[batch, length, embed] takes `fsdp` for batch (listed first) and leaves embed unsharded, while the parameter
[embed, mlp] takes `fsdp` for embed: ZeRO-3 parameters with data-parallel activations, from one table.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "sequence", "tensor")
# Logical names of the token batch; the other names come from the model's parameters.
BATCH_NAMES = ("batch", "length")

Rules = tuple[tuple[str, Any], ...]


def mesh_shape(config, device_count: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ICI shape, DCN shape) over MESH_AXES for `device_count` devices; -1 in the ICI shape takes the rest."""
    m = config.mesh
    dcn = (m.dcn_data, m.dcn_fsdp, 1, 1)
    ici = [m.data, m.fsdp, m.sequence, m.tensor]
    per_slice, remainder = divmod(device_count, math.prod(dcn))
    if remainder or min(dcn) < 1:
        raise ValueError(
            f"mesh.dcn_data * mesh.dcn_fsdp = {math.prod(dcn)} does not divide the {device_count} devices; "
            "set them to the number of slices"
        )
    free = [i for i, size in enumerate(ici) if size == -1]
    if len(free) > 1 or any(size == 0 or size < -1 for size in ici):
        raise ValueError(
            f"mesh axes {dict(zip(MESH_AXES, ici, strict=True))}: sizes must be positive, with at most one -1"
        )
    if free:
        known = math.prod(size for size in ici if size != -1)
        if per_slice % known:
            raise ValueError(
                f"mesh axes {dict(zip(MESH_AXES, ici, strict=True))} cannot fill {per_slice} devices per slice: "
                f"{known} does not divide {per_slice}"
            )
        ici[free[0]] = per_slice // known
    if math.prod(ici) != per_slice:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, ici, strict=True))} has {math.prod(ici)} devices per slice but there are {per_slice} "
            f"({device_count} devices / {math.prod(dcn)} slices); make the product match or set one axis to -1"
        )
    return tuple(ici), dcn


def make_mesh(config, devices=None) -> Mesh:
    """The named mesh over MESH_AXES (Auto axis types, as linen's logical rules expect); a hybrid ICI x DCN
    mesh when `mesh.dcn_data` or `mesh.dcn_fsdp` > 1, so that only data-parallel traffic crosses slices."""
    devices = jax.devices() if devices is None else list(devices)
    ici, dcn = mesh_shape(config, len(devices))
    if math.prod(dcn) > 1:
        # TPU devices know their slice; elsewhere (GPU clusters, CPU processes) every device reports slice 0, or
        # none, and each process is one granule.
        by_process = len({getattr(device, "slice_index", 0) for device in devices}) == 1
        grid = mesh_utils.create_hybrid_device_mesh(
            ici, dcn, devices, process_is_granule=by_process, allow_split_physical_axes=True
        )
    else:
        grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_rules(config) -> Rules:
    """`config.mesh.rules` as flax expects them: ((logical name, mesh axis | tuple of axes | None), ...)."""
    rules = tuple((str(name), _axes(axes)) for name, axes in config.mesh.rules)
    for name, axes in rules:
        unknown = [a for a in (axes if isinstance(axes, tuple) else (axes,)) if a is not None and a not in MESH_AXES]
        if unknown:
            raise ValueError(f"mesh.rules maps {name!r} onto {unknown}, which are not mesh axes {MESH_AXES}")
    return rules


def _axes(axes: Any) -> Any:
    if isinstance(axes, (tuple, list)):
        return tuple(axes) if len(axes) > 1 else (axes[0] if axes else None)
    return axes


def axis_size(mesh: Mesh, axes: Any) -> int:
    """Number of shards along one dimension of a PartitionSpec entry (None, an axis, or a tuple of axes)."""
    axes = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[a] for a in axes if a is not None)


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
    """Number of shards of the batch dimension: the product of the mesh axes that 'batch' maps onto."""
    return axis_size(mesh, nn.logical_to_mesh_axes(("batch",), rules)[0])


def check_rules_cover(logical_specs, rules: Rules) -> None:
    """Raise when a logical name used by `logical_specs` (a tree of PartitionSpecs of names) has no rule."""
    known = {name for name, _ in rules}
    used = set(BATCH_NAMES)
    for spec in jax.tree.leaves(logical_specs, is_leaf=lambda x: isinstance(x, PartitionSpec)):
        used.update(name for name in spec if name is not None)
    missing = sorted(used - known)
    if missing:
        raise ValueError(
            f"logical axis names {missing} have no rule in mesh.rules (rules cover {sorted(known)}); "
            "add e.g. ('name', None) to replicate that axis"
        )


def named_shardings(logical_specs, shapes, mesh: Mesh, rules: Rules):
    """NamedShardings for a tree of logical PartitionSpecs, after checking each sharded dimension divides."""
    check_rules_cover(logical_specs, rules)
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)

    def check(path, shape, sharding):
        for dim, axes in enumerate(sharding.spec):  # a spec may be shorter than the shape: the rest is whole
            size, shards = shape.shape[dim], axis_size(mesh, axes)
            if size % shards:
                raise ValueError(
                    f"{jax.tree_util.keystr(path)} has shape {shape.shape}: dimension {dim} (size {size}) is sharded "
                    f"over mesh axes {axes} of total size {shards}, which does not divide it; change the mesh or rules"
                )

    jax.tree_util.tree_map_with_path(check, shapes, shardings)
    return shardings


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules):
    """Makes the model's `nn.with_logical_constraint`s bind while tracing: linen reads the rules from
    `nn.logical_axis_rules` and constrains only under an abstract mesh (without one they are silently
    dropped; `jax.set_mesh` is refused inside jit and the legacy `with mesh` is invisible to linen)."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
        yield


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a [batch, length] token array."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(BATCH_NAMES, rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def process_axes(mesh: Mesh) -> list[str]:
    """The mesh axes along which devices belong to different processes (hosts, or slices of a hybrid mesh): the
    only axes whose collectives leave a host."""
    process = np.vectorize(lambda device: device.process_index)(mesh.devices)
    return [name for axis, name in enumerate(mesh.axis_names) if (np.diff(process, axis=axis) != 0).any()]


def describe(mesh: Mesh) -> str:
    """'data=1 fsdp=8 sequence=1 tensor=1 (8 cpu devices)', and with several processes which axes they span:
    'data=2 fsdp=4 sequence=1 tensor=1 (8 cpu devices in 2 processes, across data)'."""
    axes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    processes = len({device.process_index for device in np.ravel(mesh.devices)})
    where = f" in {processes} processes, across {'+'.join(process_axes(mesh))}" if processes > 1 else ""
    return f"{axes} ({mesh.devices.size} {np.ravel(mesh.devices)[0].platform} devices{where})"
