"""Which JAX platforms a process starts: on a machine that cannot hold an accelerator, only the CPU.

The `tpu` extra installs libtpu for `llama_jax.perf.aot`, which compiles for TPU slices from a CPU machine. With libtpu
installed, JAX tries to start a TPU backend in every process; where there is no TPU, libtpu prints "could not
determine TPU worker hostnames" and "No jellyfish device found", and JAX "Unable to initialize backend 'tpu'",
before falling back to the CPU. Where no TPU and no GPU can exist, JAX_PLATFORMS defaults to "cpu" here, so libtpu
is never started by a CPU run; `llama_jax.perf.aot` still loads it explicitly (jax.experimental.topologies). A
JAX_PLATFORMS that is already set, even to "", is left as it is.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips sit on the PCI bus under Google's vendor id (jax._src.hardware_utils)
GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL2, AMD ROCm


def accelerator_may_exist() -> bool:
    """False only when this machine certainly has no TPU and no GPU: its PCI bus is readable and shows no
    Google device, and no GPU device file exists. Anything uncertain counts as a possible accelerator."""
    if any(os.path.exists(path) for path in GPU_DEVICE_FILES) or glob.glob("/dev/accel*"):
        return True
    vendor_files = glob.glob("/sys/bus/pci/devices/*/vendor")
    if not vendor_files:  # no PCI listing (e.g. not Linux, or /sys not mounted): a TPU cannot be ruled out
        return True
    for path in vendor_files:
        try:
            with open(path) as f:
                if f.read().strip() == GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            return True
    return False


def default_to_cpu() -> None:
    """Make JAX start only its CPU backend where no accelerator can exist and JAX_PLATFORMS is unset."""
    if "JAX_PLATFORMS" in os.environ or accelerator_may_exist():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"  # read when jax is imported; child processes inherit it
    if "jax" in sys.modules:  # imported already: its config has read the environment
        sys.modules["jax"].config.update("jax_platforms", "cpu")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string), for benchmark records."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
