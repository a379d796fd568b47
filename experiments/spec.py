"""Run specs of a sweep: the string `get_config(arg)` takes (`size=7b,tokens=1e12[,lr=3e-4][,stable]`, big_vision's
`config.py:arg` convention) and the run name it gives (`7b_1T[_lr0.0003][_stable]`).

A spec is comma-separated `key=value` items and bare flags: `size` (a name the sweep file defines) and `tokens`
(a number) are required; other keys are the sweep file's numeric knobs, flags its named variants. Parsed strictly:
a key, size or flag the sweep does not declare, or a token count that is not a positive number, is an error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

# SI suffixes for token counts in run names: 200B, 1.4T, 4.2M.
SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


@dataclasses.dataclass(frozen=True)
class Spec:
    """One run of a sweep: model size, training tokens, numeric knobs and flags, in the order given."""

    size: str
    tokens: float
    knobs: tuple[tuple[str, float], ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The run's name and workdir below the sweep's: `<size>_<tokens>[_<knob><value>][_<flag>]`."""
        parts = [self.size, format_tokens(self.tokens)]
        parts += [f"{key}{value:g}" for key, value in self.knobs]
        return "_".join(parts + list(self.flags))

    def knob(self, key: str, default: float) -> float:
        """The value of knob `key`, or `default` when the spec does not set it."""
        return dict(self.knobs).get(key, default)


def format_tokens(tokens: float) -> str:
    """1e12 -> '1T', 1.4e12 -> '1.4T', 2e8 -> '200M', 500 -> '500'."""
    for scale, suffix in SUFFIXES:
        if tokens >= scale:
            return f"{tokens / scale:.4g}{suffix}"
    return f"{tokens:.4g}"


def parse(arg: str, sizes: Iterable[str] | None = None, knobs: Iterable[str] | None = (),
          flags: Iterable[str] | None = ()) -> Spec:
    """The Spec of `arg`; `sizes`, `knobs` and `flags` are what the sweep file accepts (None: any, as when a
    sweep's runs are named)."""
    sizes, knobs, flags = (None if x is None else list(x) for x in (sizes, knobs, flags))
    fields: dict[str, str] = {}
    knob_values: list[tuple[str, float]] = []
    flag_values: list[str] = []
    for item in (part.strip() for part in arg.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            if flags is not None and item not in flags:
                raise ValueError(f"spec {arg!r}: {item!r} is not a key=value item or a flag this sweep knows "
                                 f"({flags or 'it has none'}); e.g. 'size=7b,tokens=1e12'")
            flag_values.append(item)
        elif key in ("size", "tokens"):
            if key in fields:
                raise ValueError(f"spec {arg!r}: {key} is given twice")
            fields[key] = value
        elif knobs is None or key in knobs:
            knob_values.append((key, _number(arg, key, value)))
        else:
            raise ValueError(f"spec {arg!r}: unknown key {key!r}; this sweep knows size, tokens"
                             + "".join(f", {k}" for k in knobs))
    missing = [key for key in ("size", "tokens") if key not in fields]
    if missing:
        raise ValueError(f"spec {arg!r} lacks {' and '.join(missing)}; e.g. 'size=7b,tokens=1e12'")
    if sizes is not None and fields["size"] not in sizes:
        raise ValueError(f"spec {arg!r}: unknown size {fields['size']!r}; this sweep has sizes {sizes}")
    return Spec(fields["size"], _number(arg, "tokens", fields["tokens"]), tuple(knob_values), tuple(flag_values))


def _number(arg: str, key: str, value: str) -> float:
    """`value` as a positive finite number, or an error naming the spec and key."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"spec {arg!r}: {key}={value!r} is not a number (e.g. {key}=1e12)") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"spec {arg!r}: {key}={value!r} must be a positive number")
    return number


def steps_for(tokens: float, global_batch_size: int, seq_len: int) -> int:
    """Training steps that see `tokens` tokens in batches of global_batch_size x seq_len (rounded to the nearest)."""
    steps = round(tokens / (global_batch_size * seq_len))
    if steps < 1:
        raise ValueError(f"tokens={tokens:g} is less than one batch of {global_batch_size} x {seq_len} tokens")
    return steps
