"""Numeric precision of the frozen towers (FEATURES.PRECISION) and of training (TRAINER.<METHOD>.PREC).

Both take auto | fp32 | bf16 | fp16 (training also accepts the reference's "amp", an alias of auto).
auto means mixed precision where it pays: on CUDA, bf16 autocast when the GPU supports it, else
fp16 autocast (training then adds a gradient scaler, since fp16 gradients underflow); elsewhere fp32.
An explicit bf16 or fp16 is honoured on any device, CPU included (slow there, but useful to check
that a mixed-precision run agrees with fp32).
"""

from __future__ import annotations

import contextlib

import torch

from engine.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def autocast_dtype(prec: str, device: torch.device, key: str) -> torch.dtype | None:
    """The autocast dtype `prec` (the value of config key `key`) asks for on `device`; None = plain fp32."""
    value = str(prec).lower()
    if value == "amp":
        value = "auto"
    if value not in PRECISIONS:
        raise UserError(f"{key} must be one of {', '.join(PRECISIONS)} (amp = auto); got '{prec}'.")
    if value == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _DTYPES[value]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def store_dtype(name: str) -> torch.dtype:
    """FEATURES.STORE_DTYPE: the dtype cached features are written in (fp16 halves the files)."""
    value = str(name).lower()
    if value not in STORE_DTYPES:
        raise UserError(f"FEATURES.STORE_DTYPE must be fp32 or fp16; got '{name}'.")
    return STORE_DTYPES[value]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype` on `device`, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
