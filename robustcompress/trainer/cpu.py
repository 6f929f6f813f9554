"""What this CPU offers for training: its model name and the instruction-set flags that decide the precision."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Flags of native bf16 matrix arithmetic, best first: Intel's AMX tiles (Sapphire Rapids and later) and the
#: AVX-512 bf16 dot products (AMD Zen 4 and later, Intel Cooper Lake). oneDNN runs bf16 convolutions and matmuls on
#: them; without either, bf16 autocast converts back and forth in software and is slower than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: The flags recorded with every run and timing (the ones that change which kernels oneDNN picks).
RECORDED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and which of RECORDED_FLAGS it has."""

    model: str
    flags: tuple[str, ...]

    @property
    def native_bf16(self) -> str | None:
        """The best native bf16 flag this CPU has ('amx_bf16' or 'avx512_bf16'), or None."""
        return next((f for f in BF16_FLAGS if f in self.flags), None)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "flags": list(self.flags), "native_bf16": self.native_bf16}


def parse_cpuinfo(text: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's 'model name' and 'flags' lines)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuInfo(model or platform.processor() or platform.machine(), tuple(f for f in RECORDED_FLAGS if f in flags))


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo. Where /proc/cpuinfo is absent (macOS, Windows) the flags come from torch's dispatch
    level, which cannot tell native bf16, so such a CPU is treated as having none (fp32 training)."""
    if CPUINFO.is_file():
        return parse_cpuinfo(CPUINFO.read_text(errors="replace"))
    import torch

    level = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", "default", ...
    flags = {"avx512": ("avx2", "avx512f"), "avx2": ("avx2",)}.get(level, ())
    return CpuInfo(platform.processor() or platform.machine(), flags)
