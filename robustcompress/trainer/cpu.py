"""What this CPU offers for training: its model name and the instruction-set flags that decide the precision."""
from __future__ import annotations

import functools
import os
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
#: oneDNN's ISA levels (the values of its ONEDNN_MAX_CPU_ISA variable), lowest first, each with the recorded flags its
#: kernels may use. Setting the variable (with ATEN_CPU_CAPABILITY for ATen's own kernels) makes a CPU run the kernels
#: of a smaller one, e.g. an AVX-512 machine those of an AVX2-only one; the CpuInfo then has the smaller one's flags.
ONEDNN_ISA_FLAGS = {
    "SSE41": (), "AVX": (), "AVX2": ("avx2",), "AVX2_VNNI": ("avx2",), "AVX2_VNNI_2": ("avx2",),
    "AVX512_CORE": ("avx2", "avx512f"), "AVX512_CORE_VNNI": ("avx2", "avx512f", "avx512_vnni"),
    "AVX512_CORE_BF16": ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"),
    "AVX10_1_512": ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"),
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and which of RECORDED_FLAGS it has."""

    model: str
    flags: tuple[str, ...]
    #: Where the kernels were limited below the hardware (ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY), what to; the
    #: flags are then the limit's, not the hardware's.
    isa_limit: str | None = None

    @property
    def native_bf16(self) -> str | None:
        """The best native bf16 flag this CPU has ('amx_bf16' or 'avx512_bf16'), or None."""
        return next((f for f in BF16_FLAGS if f in self.flags), None)

    def flags_text(self, none: str = "") -> str:
        """The flags as one line (``none`` when there are none), with the kernel limit when there is one."""
        limit = f"; kernels limited by {self.isa_limit}" if self.isa_limit else ""
        return f"{', '.join(self.flags) or none}{limit}"

    def describe(self) -> dict[str, Any]:
        limit = {"isa_limit": self.isa_limit} if self.isa_limit else {}
        return {"model": self.model, "flags": list(self.flags), "native_bf16": self.native_bf16, **limit}


def limit_isa(info: CpuInfo, environ: dict[str, str] | None = None) -> CpuInfo:
    """``info`` as the kernels see it under ONEDNN_MAX_CPU_ISA (and ATEN_CPU_CAPABILITY, recorded alongside): only
    the flags the limited ISA has. An unset, unknown or higher limit (AMX levels, ALL, DEFAULT) changes no flag."""
    environ = os.environ if environ is None else environ
    onednn = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if not onednn and not aten:
        return info
    allowed = ONEDNN_ISA_FLAGS.get(onednn)
    flags = info.flags if allowed is None else tuple(f for f in info.flags if f in allowed)
    parts = [f"ONEDNN_MAX_CPU_ISA={onednn}"] * bool(onednn) + [f"ATEN_CPU_CAPABILITY={aten}"] * bool(aten)
    hardware = ", ".join(info.flags) or "none of the recorded flags"
    return CpuInfo(info.model, flags, f"{', '.join(parts)} (hardware flags: {hardware})")


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
    """This machine's CpuInfo, limited as its kernels are (``limit_isa``). Where /proc/cpuinfo is absent (macOS,
    Windows) the flags come from torch's dispatch level, which cannot tell native bf16, so such a CPU is treated as
    having none (fp32 training)."""
    if CPUINFO.is_file():
        return limit_isa(parse_cpuinfo(CPUINFO.read_text(errors="replace")))
    import torch

    level = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", "default", ...
    flags = {"avx512": ("avx2", "avx512f"), "avx2": ("avx2",)}.get(level, ())
    return limit_isa(CpuInfo(platform.processor() or platform.machine(), flags))
