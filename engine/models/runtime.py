"""Device and ONNX Runtime provider choice, in one place.

onnxruntime-gpu logs an error when its CUDA provider is requested on a machine
without a GPU, so CUDA is asked for only when torch sees one.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch

from engine.errors import EXIT_USAGE, FATError, option_ref


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FATError(f"{option_ref('device', device)} was asked for but no CUDA GPU is visible to torch; "
                       f"use {option_ref('device', 'cpu')} (or {option_ref('device', 'auto')}).", EXIT_USAGE)
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise FATError(f"unknown device {device!r}; use cpu, cuda or auto.", EXIT_USAGE)
    return torch.device(device)


def ort_providers(device: torch.device | None = None) -> list[str]:
    wanted_cuda = device is not None and device.type == "cuda"
    available = ort.get_available_providers()
    if wanted_cuda and torch.cuda.is_available() and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(path: Path, device: torch.device | None = None, lean: bool = False) -> ort.InferenceSession:
    """`lean` trades speed for memory (no weight pre-packing, no arena): for one-off checks."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if lean:
        opts.enable_cpu_mem_arena = False
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=ort_providers(device))


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX); without them bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: torch.device, preferred: str = "bf16") -> str:
    """fp32 or bf16 for the differentiable path; auto takes the backbone recipe's preference where the
    hardware runs it natively."""
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if precision == "auto":
        return "bf16" if preferred == "bf16" and native else "fp32"
    if precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise FATError(f"{option_ref('precision', 'bf16')}: this CPU has no bf16 support in oneDNN; use "
                       f"{option_ref('precision', 'fp32')} (or {option_ref('precision', 'auto')}).", EXIT_USAGE)
    return precision
