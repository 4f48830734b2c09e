"""Which floating-point precision a model runs in on its device: the names, what the device supports, the autocast.

Reduced precision is autocast, not a cast of the weights: the weights stay float32 and torch runs the matrix
products in the lower precision while keeping softmax, layer norms and the loss in float32 (a float16 cast of a
whole masked LM overflows in its layer norms; autocast is also what the Trainer's --bf16/--fp16 do).
"""

from contextlib import nullcontext
from functools import lru_cache
from typing import Literal

import torch

from textdiffusion.errors import SettingsError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = Literal[tuple(DTYPES)]  # the command-line choices: this table's keys


@lru_cache(maxsize=None)
def cpu_bf16_supported() -> bool:
    """Whether torch autocasts to bfloat16 on this CPU: autocast is available for the CPU and a matrix product
    under it really comes out in bfloat16 (native on AVX512-BF16/AMX CPUs, emulated, slower, elsewhere)."""
    if not torch.amp.is_autocast_available("cpu"):
        return False
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            product = torch.ones(4, 4) @ torch.ones(4, 4)
    except RuntimeError:
        return False
    return product.dtype == torch.bfloat16 and bool((product == 4).all())


def supports(device: torch.device, dtype: str) -> bool:
    """Whether `device` can run autocast in `dtype` (a DTYPES name); float32 everywhere."""
    if dtype == "float32":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (dtype == "float16" or torch.cuda.is_bf16_supported())
    # float16 autocast on a CPU exists in recent torch but is emulated and loses precision: CUDA only here.
    return device.type == "cpu" and dtype == "bfloat16" and cpu_bf16_supported()


def default_dtype(device: torch.device) -> str:
    """bfloat16 on a CUDA GPU that has it (what sampling always used there), float32 elsewhere."""
    return "bfloat16" if device.type == "cuda" and supports(device, "bfloat16") else "float32"


def check_dtype(device: torch.device, dtype: str | None) -> str:
    """The DTYPES name to run in on `device` (`dtype` None: default_dtype); SettingsError for a name that is
    unknown or that the device cannot run, naming what it can."""
    if dtype is None:
        return default_dtype(device)
    if dtype not in DTYPES:
        raise SettingsError(f"dtype {dtype!r} is unknown; choose one of {', '.join(DTYPES)}")
    if not supports(device, dtype):
        usable = [name for name in DTYPES if supports(device, name)]
        why = "a CUDA GPU" if dtype == "float16" else "a CPU or GPU that torch can autocast to bfloat16"
        raise SettingsError(f"dtype {dtype} needs {why}, and device {device} is not one; use dtype {' or '.join(usable)}")
    return dtype


def autocast(device: torch.device, dtype: str):
    """The context to run a model on `device` in `dtype` (a DTYPES name): nothing for float32, else autocast."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])
