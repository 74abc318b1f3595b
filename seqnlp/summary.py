"""A Keras-style `model.summary()` for any nn.Module: layers, output shapes, parameter counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from seqnlp.device import use_bf16
from seqnlp.encoders import RNNEncoder
from seqnlp.precision import device_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) number of parameter elements; shared (tied) parameters count once."""
    total = trainable = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return total, trainable


def _describe(value: Any) -> str:
    """Shapes of the tensors inside a module's output (tensor, tuple/NamedTuple, dict, dataclass)."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape)).replace(",)", ")")
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        parts = [f"{k}={_describe(v)}" for k, v in zip(value._fields, value) if v is not None]
        return ", ".join(p for p in parts if not p.endswith("="))
    if isinstance(value, (tuple, list)):
        parts = [_describe(v) for v in value if v is not None]
        return "[" + ", ".join(p for p in parts if p) + "]" if parts else ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items() if _describe(v))
    if hasattr(value, "__dataclass_fields__"):
        return _describe({k: getattr(value, k) for k in value.__dataclass_fields__})
    return ""


def _call(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, tuple) and not hasattr(batch, "_fields"):
        model(*batch)
    elif isinstance(batch, Mapping):
        model(**batch)
    else:
        model(batch)


def summary(model: nn.Module, batch: Any = None) -> str:
    """A table with one row per named submodule (indented by depth): name, type, output shape, parameters.

    The parameter column counts each module's own parameters (not its children's), so it sums to the
    total. With `batch` (one argument, a tuple of positional arguments, or a dict of keyword arguments),
    the model runs once without gradients and forward hooks record each module's last output shape.
    """
    shapes: dict[str, str] = {}
    if batch is not None:
        handles = []
        for name, module in model.named_modules():

            def hook(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
                shapes[name] = _describe(output)

            handles.append(module.register_forward_hook(hook))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                _call(model, batch)
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
    rows = [("Layer", "Type", "Output shape", "Params")]
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        label = "  " * depth + (name.rsplit(".", 1)[-1] if name else "(model)")
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((label, type(module).__name__, shapes.get(name, "" if batch is None else "-"), f"{own:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    line = "-" * (sum(widths) + 6)

    def fmt(row: tuple[str, str, str, str]) -> str:
        return "  ".join(
            [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3].rjust(widths[3])]
        )

    total, trainable = count_parameters(model)
    lines = [line, fmt(rows[0]), line, *(fmt(row) for row in rows[1:]), line]
    lines += [
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(lines)


def describe_precision(model: nn.Module | None, device: torch.device | str = "cpu", precision: str = "auto",
                       batch: int | None = None) -> str:
    """The device model and the precision each part of `model` runs in there, for benchmark and log lines.

    e.g. "Intel(R) Xeon(R) Processor: autocast bf16, lstm recurrence bf16". `precision` is the model-wide
    setting (TrainConfig.precision); `batch` the rows per batch, which the recurrences' decisions depend on.
    """
    device = torch.device(device)
    parts = [f"autocast {'bf16' if use_bf16(precision, device) else 'fp32'}"]
    for module in (model.modules() if model is not None else ()):
        if isinstance(module, RNNEncoder):
            part = f"{module.cell} recurrence {'bf16' if module.uses_bf16(device, batch) else 'fp32'}"
            parts += [part] if part not in parts else []
    return f"{device_model(device)}: {', '.join(parts)}"
