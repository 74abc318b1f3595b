"""Checkpoint files of a run folder: model weights, optimizer state and RNG states, without pickle.

Weights and optimizer tensors go to safetensors; everything else (optimizer hyper-parameters, the
trainer's counters, RNG states) to JSON. A checkpoint is several files, so one of them,
`trainer_state.json`, is the commit record: the step-tagged files it names are written first, and
a crash before it is replaced leaves the previous record pointing at the previous, intact files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqnlp.errors import SeqnlpError
from seqnlp.io import atomic_write_json, load_weights, read_json, save_weights

STATE_FILE = "trainer_state.json"
BEST_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
CHECKPOINT_DIR = "checkpoint"  # step-tagged model/optimizer files named by trainer_state.json
STATE_VERSION = 1


# ---------------------------------------------------------------- model weights


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier one (tied weights); safetensors refuses them."""
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in tensors.items():
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        # A view into a larger (shared) storage would be saved whole or refused: give it its own copy.
        kept[name] = t.detach().cpu().clone() if t.numel() and t.untyped_storage().nbytes() != t.nbytes else t
    return kept, aliases


def save_model_weights(path: str | Path, model: nn.Module,
                       extra_metadata: dict[str, str] | None = None) -> None:
    """Atomically save `model.state_dict()` (persistent buffers included) as safetensors.

    Tied weights are stored once; the aliases are kept in the file's metadata and restored on load.
    """
    tensors, aliases = _dedupe(dict(model.state_dict()))
    metadata = {"format": "pt", "seqnlp_aliases": json.dumps(aliases)}
    metadata.update(extra_metadata or {})
    save_weights(path, tensors, metadata=metadata)


def _read_aliases(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("seqnlp_aliases", "{}"))
    except Exception:  # a corrupt file is reported by load_weights with a clearer message
        return {}


def read_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict saved by `save_model_weights` (aliases of tied weights filled back in)."""
    path = Path(path)
    tensors = load_weights(path)
    for name, target in _read_aliases(path).items():
        if target in tensors:
            tensors[name] = tensors[target]
    return tensors


def load_state_into(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """`model.load_state_dict(tensors)` with a one-line SeqnlpError when the weights do not fit the model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors)
                   if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            more = f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""
            parts.append(f"shape of {k} is {tuple(tensors[k].shape)} in the file but "
                         f"{tuple(expected[k].shape)} in the model{more}")
        raise SeqnlpError(f"weights in {path} do not match the model ({'; '.join(parts)}); "
                          "was the model built from this run's config.json?")
    model.load_state_dict(tensors, strict=True)


# ---------------------------------------------------------------- optimizer state


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON-ready values."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                plain.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         info: dict[str, Any]) -> None:
    """Inverse of `optimizer_to_files`: load the state back into `optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, slots in info.get("plain_state", {}).items():
        state.setdefault(int(idx), {}).update(slots)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as err:
        raise SeqnlpError(f"the saved optimizer state does not fit this model ({err}); "
                          "resume with the same model settings") from None


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) generator states as JSON-ready values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        # Generator states are byte tensors: hex keeps the JSON small and fast to write at every checkpoint.
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])


def _bytes_tensor(hex_text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(bytes.fromhex(hex_text)), dtype=torch.uint8)


# ---------------------------------------------------------------- the checkpoint set


def write_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    """Write model + optimizer files tagged with `state["step"]`, then commit them with trainer_state.json.

    After the commit `last.safetensors` is pointed at the new weights (a hard link, so no extra copy)
    and the previous step's files are removed. Any OSError leaves the previous commit untouched and
    readable; it is raised as a SeqnlpError.
    """
    step = int(state["step"])
    ckpt = run_dir / CHECKPOINT_DIR
    model_name = f"{CHECKPOINT_DIR}/model-{step:09d}.safetensors"
    optim_name = f"{CHECKPOINT_DIR}/optimizer-{step:09d}.safetensors"
    previous = _committed_files(run_dir)
    opt_tensors, opt_info = optimizer_to_files(optimizer)
    state = dict(state, version=STATE_VERSION, files={"model": model_name, "optimizer": optim_name},
                 optimizer=opt_info)
    written: list[Path] = []
    try:
        ckpt.mkdir(parents=True, exist_ok=True)
        save_model_weights(run_dir / model_name, model, {"step": str(step)})
        written.append(run_dir / model_name)
        save_weights(run_dir / optim_name, opt_tensors, metadata={"step": str(step)})
        written.append(run_dir / optim_name)
        atomic_write_json(run_dir / STATE_FILE, state)  # the commit point
    except (SeqnlpError, OSError) as err:
        for path in written:
            if f"{CHECKPOINT_DIR}/{path.name}" not in previous:  # never delete what the last commit names
                _unlink(path)
        raise SeqnlpError(f"could not save the checkpoint at step {step} in {run_dir} ({err}); "
                          f"{_previous_text(run_dir)}; free some space or choose a writable --output"
                          ) from None
    _point_last(run_dir, run_dir / model_name)
    for name in previous - {model_name, optim_name}:
        _unlink(run_dir / name)


def _previous_text(run_dir: Path) -> str:
    try:
        state = read_json(run_dir / STATE_FILE)
        return f"the previous checkpoint (step {state['step']}) is intact"
    except (SeqnlpError, KeyError, TypeError):
        return "no earlier checkpoint exists"


def _point_last(run_dir: Path, target: Path) -> None:
    """Make last.safetensors the committed weights: a hard link renamed into place, or a copy."""
    tmp = run_dir / f".{LAST_FILE}.link.tmp"
    try:
        _unlink(tmp)
        os.link(target, tmp)
        os.replace(tmp, run_dir / LAST_FILE)
    except OSError:
        _unlink(tmp)
        try:
            save_weights(run_dir / LAST_FILE, load_weights(target), metadata=_metadata(target))
        except SeqnlpError:
            pass  # last.safetensors is a convenience copy; the committed checkpoint is what resume reads


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _committed_files(run_dir: Path) -> set[str]:
    """Relative names of the step-tagged files in the checkpoint folder (all of them, stale ones too)."""
    ckpt = run_dir / CHECKPOINT_DIR
    if not ckpt.is_dir():
        return set()
    return {f"{CHECKPOINT_DIR}/{p.name}" for p in ckpt.iterdir()
            if p.name.endswith(".safetensors") and p.name.startswith(("model-", "optimizer-"))}


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The committed trainer state of `run_dir`, or None when no checkpoint was ever committed."""
    if not (run_dir / STATE_FILE).exists():
        return None
    state = read_json(run_dir / STATE_FILE)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "files" not in state:
        raise SeqnlpError(f"{run_dir / STATE_FILE} is not a seqnlp trainer state (version {STATE_VERSION}); "
                          "start a new run with --overwrite")
    return state


def restore_checkpoint(run_dir: Path, state: dict[str, Any], model: nn.Module,
                       optimizer: torch.optim.Optimizer) -> None:
    """Load the committed weights and optimizer state named by `state` into `model` and `optimizer`."""
    model_path = run_dir / state["files"]["model"]
    load_state_into(model, read_model_weights(model_path), model_path)
    optimizer_from_files(optimizer, load_weights(run_dir / state["files"]["optimizer"]), state["optimizer"])


def remove_run_files(run_dir: Path, extra_names: set[str]) -> None:
    """Delete the files a training run writes (for --overwrite); anything else in the folder is kept."""
    names = {BEST_FILE, LAST_FILE, STATE_FILE, "log.jsonl", "metrics.json", "training_curves.png"}
    for name in names | extra_names:
        _unlink(run_dir / name)
    for name in _committed_files(run_dir):
        _unlink(run_dir / name)
    ckpt = run_dir / CHECKPOINT_DIR
    for p in ckpt.glob(".*.tmp") if ckpt.is_dir() else ():
        _unlink(p)
    try:
        ckpt.rmdir()
    except OSError:
        pass
