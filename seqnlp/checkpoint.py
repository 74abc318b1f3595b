"""Checkpoint files of a run folder: model weights, optimizer state and RNG states, without pickle.

Weights and optimizer tensors go to safetensors; everything else (optimizer hyper-parameters, the
trainer's counters, RNG states) to JSON. A checkpoint is several files, so one of them,
`trainer_state.json`, is the commit record: the step-tagged files it names are written first, and
a crash before it is replaced leaves the previous record pointing at the previous, intact files.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqnlp.errors import SeqnlpError
from seqnlp.io import atomic_write_json, load_weights, read_json, save_weights, sha256_file

STATE_FILE = "trainer_state.json"
BEST_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
CHECKPOINT_DIR = "checkpoint"  # step-tagged model/optimizer files named by trainer_state.json
STATE_VERSION = 1
# safetensors metadata keys: the best step of model.safetensors, and sha256 of the run files (config.json,
# tokenizer.json, ...) the weights were trained with, as JSON {name: hex digest}.
BEST_STEP_KEY = "best_step"
ARTIFACTS_KEY = "seqnlp_artifacts"


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
    check_fit(model, tensors, path)
    model.load_state_dict(tensors, strict=True)


def check_fit(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """SeqnlpError naming missing, unexpected and mis-shaped tensors when `tensors` do not fit `model`."""
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


def _same_kind(saved: Any, fresh: Any) -> bool:
    if fresh is None or saved is None:
        return True  # e.g. foreach/fused: None means "let torch choose"
    if isinstance(fresh, bool) or isinstance(saved, bool):
        return isinstance(fresh, bool) and isinstance(saved, bool)
    if isinstance(fresh, (int, float)):
        return isinstance(saved, (int, float)) and (not isinstance(saved, float) or np.isfinite(saved))
    if isinstance(fresh, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(fresh) and all(
            _same_kind(a, b) for a, b in zip(saved, fresh))
    return isinstance(saved, type(fresh))


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         info: dict[str, Any], where: str = "the saved optimizer state") -> None:
    """Inverse of `optimizer_to_files`: load the state back into `optimizer`.

    Hyper-parameters of the wrong type or shape (a hand-edited file) are refused before torch sees them,
    as a SeqnlpError naming `where`.
    """
    fix = "resume with the same model settings, or start a new run with --overwrite"
    groups = info.get("param_groups") if isinstance(info, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or not all(
            isinstance(g, dict) for g in groups):
        raise SeqnlpError(f"{where}: optimizer.param_groups must be a list of {len(optimizer.param_groups)} "
                          f"objects; {fix}")
    for i, (saved, fresh) in enumerate(zip(groups, optimizer.param_groups)):
        for key, value in fresh.items():
            if key == "params":
                ok = isinstance(saved.get(key), list) and len(saved[key]) == len(value) and all(
                    isinstance(p, int) and not isinstance(p, bool) for p in saved[key])
            else:
                ok = key not in saved or _same_kind(saved[key], value)
            if not ok:
                raise SeqnlpError(f"{where}: optimizer.param_groups[{i}].{key} is {saved.get(key)!r}, which does "
                                  f"not fit this optimizer; {fix}")
    plain = info.get("plain_state", {})
    if not isinstance(plain, dict) or not all(isinstance(v, dict) for v in plain.values()):
        raise SeqnlpError(f"{where}: optimizer.plain_state must be an object of objects; {fix}")
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in tensors.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for idx, slots in plain.items():
            state.setdefault(int(idx), {}).update(slots)
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
        raise SeqnlpError(f"{where} does not fit this model ({err}); {fix}") from None


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


def _parse_rng(state: Any) -> tuple[Any, Any, torch.Tensor, list[torch.Tensor] | None]:
    """What `set_rng_state` applies, each part checked on a throwaway generator first (ValueError if bad)."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise ValueError("an RNG state must be an object with python, numpy and torch entries")
    try:
        version, internal, gauss = state["python"]
        py = (version, tuple(internal), gauss)
        random.Random().setstate(py)
    except (TypeError, ValueError, OverflowError, IndexError, KeyError) as err:
        raise ValueError(f"the python RNG state is broken ({err})") from None
    try:
        name, keys, pos, has_gauss, cached = state["numpy"]
        if not isinstance(keys, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise TypeError("the keys must be a list of integers")
        np_state = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        np.random.RandomState().set_state(np_state)
    except (TypeError, ValueError, OverflowError, IndexError, KeyError) as err:
        raise ValueError(f"the numpy RNG state is broken ({err})") from None
    try:
        cpu = _bytes_tensor(state["torch"])
        torch.Generator().set_state(cpu)
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        raise ValueError(f"the torch RNG state is broken ({err})") from None
    cuda = None
    if "cuda" in state:
        try:
            if not isinstance(state["cuda"], list):
                raise TypeError("it must be a list")
            cuda = [_bytes_tensor(h) for h in state["cuda"]]
        except (TypeError, ValueError) as err:
            raise ValueError(f"the cuda RNG state is broken ({err})") from None
    return py, np_state, cpu, cuda


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (a broken state is a SeqnlpError and changes nothing)."""
    try:
        py, np_state, cpu, cuda = _parse_rng(state)
    except ValueError as err:
        raise SeqnlpError(f"cannot restore the random generators: {err}") from None
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(cuda)
        except RuntimeError as err:
            raise SeqnlpError(f"cannot restore the CUDA random generators ({err})") from None


def _bytes_tensor(hex_text: str) -> torch.Tensor:
    if not isinstance(hex_text, str):
        raise TypeError(f"expected a hex string, not {type(hex_text).__name__}")
    return torch.frombuffer(bytearray(bytes.fromhex(hex_text)), dtype=torch.uint8)


# ---------------------------------------------------------------- the checkpoint set


def write_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Write model + optimizer files tagged with `state["step"]`, then commit them with trainer_state.json.

    `metadata` goes into the model file's safetensors metadata (e.g. the artifacts' hashes). After the
    commit `last.safetensors` is pointed at the new weights (a hard link, so no extra copy) and the
    previous step's files are removed. Any OSError leaves the previous commit untouched and readable;
    it is raised as a SeqnlpError.
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
        save_model_weights(run_dir / model_name, model, {**(metadata or {}), "step": str(step)})
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
        return f"the previous checkpoint (step {int(state['step'])}) is intact"
    except (SeqnlpError, KeyError, TypeError, ValueError):
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


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a weights file ({} when it has none); SeqnlpError when unreadable."""
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise SeqnlpError(f"{path} does not exist or is not a regular file")
    try:
        return _metadata(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise SeqnlpError(f"{path} is not a readable safetensors file ({err}); the file is corrupt or truncated"
                          ) from None


def artifact_hashes(run_dir: str | Path, names: list[str] | set[str] | tuple[str, ...]) -> dict[str, str]:
    """sha256 of each run file in `names` as it is on disk now (what `check_artifacts` compares)."""
    return {name: sha256_file(Path(run_dir) / name) for name in sorted(names)}


def check_artifacts(run_dir: str | Path, weights: str | Path | None = None) -> None:
    """Refuse a run folder whose config.json / tokenizer.json are not the ones `weights` were saved with.

    `weights` defaults to RUN/model.safetensors. Weights saved with their artifacts' sha256 (see
    ARTIFACTS_KEY) are compared file by file; weights saved without (runs made before the hashes were
    recorded, or a bare weights file) pass unchecked.
    """
    run_dir = Path(run_dir)
    path = Path(weights) if weights is not None else run_dir / BEST_FILE
    recorded_text = weights_metadata(path).get(ARTIFACTS_KEY)
    if recorded_text is None:
        return
    try:
        recorded = json.loads(recorded_text)
        if not isinstance(recorded, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()):
            raise ValueError("not an object of strings")
    except ValueError as err:
        raise SeqnlpError(f"{path}: the recorded artifact hashes are corrupt ({err})") from None
    for name, digest in sorted(recorded.items()):
        if Path(name).name != name or name in ("", ".", ".."):
            raise SeqnlpError(f"{path}: the recorded artifact name {name!r} is not a plain file name")
        file = run_dir / name
        if not file.exists():
            raise SeqnlpError(f"{name} is missing from {run_dir}; these weights were saved with it "
                              f"(sha256 {digest[:12]}...): restore the run's {name}")
        found = sha256_file(file)
        if found != digest:
            raise SeqnlpError(f"{name} does not belong to these weights ({file} has sha256 {found[:12]}..., "
                              f"{path.name} was saved with {digest[:12]}...); use the {name} the run was "
                              "trained with")


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
    """The committed trainer state of `run_dir`, or None when no checkpoint was ever committed.

    Everything a resume reads is checked here, before anything is restored: a hand-edited or damaged
    trainer_state.json (missing or mistyped counters, a broken RNG state, files outside the run folder)
    is a one-line SeqnlpError naming the file.
    """
    path = run_dir / STATE_FILE
    if not os.path.lexists(path):
        return None
    state = read_json(path)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SeqnlpError(f"{path} is not a seqnlp trainer state (version {STATE_VERSION}); "
                          "start a new run with --overwrite")
    problem = _state_problem(state, run_dir)
    if problem:
        raise SeqnlpError(f"{path} is not a usable trainer state: {problem}; it was edited or damaged: restore "
                          "it, or start a new run with --overwrite")
    return state


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return _int(v) or (isinstance(v, float) and math.isfinite(v))


# key → (check, what it must be); every key here is required (a checkpoint always writes them).
_STATE_FIELDS: dict[str, tuple[Any, str]] = {
    **{k: (lambda v: _int(v) and v >= 0, "a whole number >= 0") for k in (
        "step", "epoch", "position", "total_steps", "best_step", "bad_evals", "plateau_bad", "tokens",
        "loss_count", "eval_loss_count", "log_bytes")},
    "last_eval_step": (lambda v: _int(v) and v >= -1, "a whole number >= -1"),
    "plateau_scale": (lambda v: _num(v) and v > 0, "a number > 0"),
    **{k: (lambda v: _num(v) and v >= 0, "a number >= 0") for k in ("elapsed", "step_seconds")},
    **{k: (_num, "a finite number") for k in ("loss_sum", "eval_loss_sum")},
    "best": (lambda v: v is None or _num(v), "a number or null"),
    **{k: (lambda v: isinstance(v, dict), "an object") for k in ("best_metrics", "final_metrics", "optimizer")},
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of objects"),
    "rng": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of RNG states"),
    "files": (lambda v: isinstance(v, dict) and {"model", "optimizer"} <= set(v),
              "an object naming the model and optimizer files"),
}
# Optional keys (older states may lack them).
_STATE_OPTIONAL: dict[str, tuple[Any, str]] = {
    "world": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "stopped": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "budget_bound": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "config": (lambda v: isinstance(v, dict), "an object"),
}


def _state_problem(state: dict[str, Any], run_dir: Path) -> str | None:
    """What is wrong with a trainer state read from disk, or None."""
    for key, (ok, want) in _STATE_FIELDS.items():
        if key not in state:
            return f"{key} is missing"
        if not ok(state[key]):
            return f"{key} must be {want}, not {_shown(state[key])}"
    for key, (ok, want) in _STATE_OPTIONAL.items():
        if key in state and not ok(state[key]):
            return f"{key} must be {want}, not {_shown(state[key])}"
    groups = state["optimizer"].get("param_groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        return "optimizer.param_groups must be a non-empty list of objects"
    if not isinstance(state["optimizer"].get("plain_state", {}), dict):
        return "optimizer.plain_state must be an object"
    for i, rng in enumerate(state["rng"]):
        try:
            _parse_rng(rng)
        except ValueError as err:
            return f"rng[{i}]: {err}"
    for key in ("model", "optimizer"):
        try:
            checked_run_path(run_dir, state["files"][key], f"files.{key}")
        except SeqnlpError as err:
            return str(err)
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_run_path(run_dir: Path, name: Any, what: str = "a file name") -> Path:
    """`run_dir / name` for a path recorded in a run's files, refused unless it stays inside `run_dir`.

    Refused: anything but a relative path string, '..' parts, and paths that leave the folder through a
    symbolic link (the check is on the resolved path).
    """
    if not isinstance(name, str) or not name or Path(name).is_absolute() or "\0" in name:
        raise SeqnlpError(f"{what} must be a relative path inside the run folder, not {_shown(name)}")
    if ".." in Path(name).parts:
        raise SeqnlpError(f"{what} {name!r} must stay inside the run folder ('..' is not allowed)")
    path = run_dir / name
    try:
        inside = path.resolve().is_relative_to(run_dir.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise SeqnlpError(f"{what} {name!r} must stay inside the run folder, but leads to {path.resolve()}")
    return path


def restore_checkpoint(run_dir: Path, state: dict[str, Any], model: nn.Module,
                       optimizer: torch.optim.Optimizer) -> None:
    """Load the committed weights and optimizer state named by `state` into `model` and `optimizer`."""
    model_path = checked_run_path(run_dir, state["files"]["model"], "files.model")
    optim_path = checked_run_path(run_dir, state["files"]["optimizer"], "files.optimizer")
    load_state_into(model, read_model_weights(model_path), model_path)
    optimizer_from_files(optimizer, load_weights(optim_path), state["optimizer"],
                         where=f"{run_dir / STATE_FILE} with {optim_path.name}")


def remove_run_files(run_dir: Path, extra_names: set[str]) -> None:
    """Delete the files a training run writes (for --overwrite); anything else in the folder is kept."""
    names = {BEST_FILE, LAST_FILE, STATE_FILE, "log.jsonl", "metrics.json", "training_curves.png"}
    for name in names | extra_names:
        _unlink(run_dir / name)
    for name in _committed_files(run_dir):
        _unlink(run_dir / name)
    # what scoring the old run left: its evaluations and their pictures must not sit beside the new run's
    for pattern in ("evaluation_*.json", "confusion*.png", "test_metrics.json"):
        for p in run_dir.glob(pattern):
            _unlink(p)
    ckpt = run_dir / CHECKPOINT_DIR
    for p in ckpt.glob(".*.tmp") if ckpt.is_dir() else ():
        _unlink(p)
    try:
        ckpt.rmdir()
    except OSError:
        pass
