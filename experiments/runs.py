"""One run of a sweep: its name, spec, locked config and workdir. Shared by the sweep (which expands a sweep file
into runs) and the launchers (experiments.launch, experiments.pod), so that neither imports the other."""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments import spec


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its name, spec, locked config, and the run and step it branches from (or None)."""

    sweep: str
    name: str
    arg: str
    config_file: str
    config: Any = dataclasses.field(repr=False)
    branch: tuple[str, int] | None = None

    def workdir(self, root: str, name: str | None = None) -> str:
        """The workdir of this run (or of the sweep's run `name`) under `root`."""
        return f"{root.rstrip('/')}/{self.sweep}/{name or self.name}"

    @property
    def parsed(self) -> spec.Spec:
        """The run's spec: size, tokens, knobs, flags."""
        return spec.parse(self.arg, knobs=None, flags=None)

    @property
    def trained_tokens(self) -> int:
        """Tokens this run trains on itself: all of them, or a branch's cooldown only."""
        first = self.branch[1] if self.branch else 0
        return (self.config.train.steps - first) * self.config.train.global_batch_size * self.config.train.seq_len
