"""Ship a trained run as ONNX, and run such an export through onnxruntime with the same calls as `seqnlp.load`.

    python -m seqnlp.export --model RUN_DIR --format onnx --output DIR
    model = seqnlp.export.load_onnx(DIR)      # .predict / .tag / .translate / .generate / .log_prob, as seqnlp.load

Each task's predictor names its graphs in `onnx_parts()` ({name: {"module", "inputs", "outputs", "axes"}}: the
classifier's and the tagger's forward, the language model's single step, the translation encoder and decoder
step), and its recipe's `TaskSpec.onnx` rebuilds the predictor over them; this module only loops over both.
Graphs are exported in fp32 through torch's TorchScript exporter (the dynamo exporter bakes the example's length
into the recurrent encoder's reshapes), checked against PyTorch on their example inputs, and written with the
run's config and tokenizer files (and its model card) beside them, so the folder stands alone. Needs the
`onnx` extra: pip install 'seqnlp[onnx]'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from seqnlp import __version__, checkpoint, load, run_folder
from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.io import atomic_write_json, read_json
from seqnlp.tasks import spec
from seqnlp.tasks.runner import CONFIG_FILE, read_config, settings_of

MANIFEST = "onnx.json"  # {"task", "opset", "parts": {name: {"file", "inputs", "outputs", "max_abs_diff"}}}
OPSET = 17
TOLERANCE = 1e-4  # the largest difference from PyTorch an exported graph may show on its example inputs


def _onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime
    except ImportError:
        raise SeqnlpError("ONNX export and loading need the onnx extra: pip install 'seqnlp[onnx]' "
                          "(onnx, onnxruntime)") from None
    return onnxruntime


class OnnxPart:
    """One exported graph in onnxruntime: called with tensors in its input order, returns its outputs as tensors."""

    def __init__(self, path: Path, inputs: list[str], threads: int = 0) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (every core)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = inputs
        self._kept = {i.name for i in self.session.get_inputs()}  # the exporter drops inputs a graph never reads

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.inputs, tensors) if n in self._kept}
        return tuple(torch.from_numpy(out) for out in self.session.run(None, feed))


class _Graph(nn.Module):
    """A part's function as the module the exporter traces; the predictor's model rides along for eval()."""

    def __init__(self, function: Callable[..., Any], model: nn.Module) -> None:
        super().__init__()
        self.function, self.model = function, model

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.function(*inputs)


@contextlib.contextmanager
def fp32_encoders(model: nn.Module) -> Iterator[None]:
    """Every RNNEncoder of `model` in fp32 (the precision an ONNX graph runs in), restored afterwards."""
    encoders = [m for m in model.modules() if isinstance(m, RNNEncoder)]
    saved = [e.precision for e in encoders]
    for e in encoders:
        e.precision = "fp32"
    try:
        yield
    finally:
        for e, precision in zip(encoders, saved):
            e.precision = precision


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _run_files(run_dir: Path) -> list[str]:
    """config.json and the tokenizer files the run's weights were saved with (their hashes name them)."""
    recorded = checkpoint.weights_metadata(run_dir / checkpoint.BEST_FILE).get(checkpoint.ARTIFACTS_KEY)
    if recorded:
        return sorted(json.loads(recorded))
    return [CONFIG_FILE, *sorted(p.name for p in run_dir.glob("*tokenizer*.json")),
            *(["vocab.json"] if (run_dir / "vocab.json").exists() else [])]  # runs saved before the hashes


def export_onnx(model: str | Path, output: str | Path) -> dict[str, Any]:
    """Export a run folder (or hub repo id) into `output` as ONNX graphs plus its config and tokenizers.

    Returns the manifest written as `output`/onnx.json. SeqnlpError when the task has no ONNX export, or
    when a graph's outputs differ from PyTorch's by more than TOLERANCE on its example inputs.
    """
    _onnxruntime()
    run_dir = run_folder(model)
    predictor = load(run_dir)
    task = read_config(run_dir)[1]["task"]
    if not hasattr(predictor, "onnx_parts") or spec(task).onnx is None:
        raise SeqnlpError(f"{task} models have no ONNX export")
    out = Path(output)
    if out.resolve() == run_dir.resolve():
        raise SeqnlpError("--output must be a new folder, not the run folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"task": task, "opset": OPSET, "seqnlp_version": __version__, "parts": {}}
    with fp32_encoders(predictor.model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        for name, part in predictor.onnx_parts().items():
            graph = _Graph(part["module"], predictor.model).eval()
            inputs = tuple(part["inputs"].values())
            path = out / f"{name}.onnx"
            torch.onnx.export(graph, inputs, str(path), input_names=list(part["inputs"]), output_names=part["outputs"],
                              dynamic_axes=part["axes"], opset_version=OPSET, dynamo=False)
            expected, got = _as_tuple(graph(*inputs)), OnnxPart(path, list(part["inputs"]))(*inputs)
            diff = max(float((e.float() - g.float()).abs().max()) for e, g in zip(expected, got))
            if not diff <= TOLERANCE:
                raise SeqnlpError(f"the exported {name} graph differs from PyTorch by {diff:.3g} on its example "
                                  f"inputs (more than {TOLERANCE:g}); please report it")
            manifest["parts"][name] = {"file": path.name, "inputs": list(part["inputs"]), "outputs": part["outputs"],
                                       "max_abs_diff": diff}
    for name in [*_run_files(run_dir), *(["README.md"] if (run_dir / "README.md").exists() else [])]:
        shutil.copyfile(run_dir / name, out / name)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def load_onnx(folder: str | Path, threads: int = 0) -> Any:
    """An ONNX export (or a hub repo holding one) as its task's predictor, running through onnxruntime on CPU.

    `threads`: onnxruntime's intra-op threads (0 = its default). Classifiers and taggers answer predict / tag;
    language models generate / log_prob and translators translate, one exported step at a time.
    """
    _onnxruntime()
    run, config = read_config(run_folder(folder))
    manifest = read_json(run / MANIFEST) if (run / MANIFEST).exists() else None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise SeqnlpError(f"{run} holds no {MANIFEST}; export a run first: python -m seqnlp.export --model RUN_DIR "
                          f"--format onnx --output {run}")
    task_spec = spec(config["task"])
    parts = {name: OnnxPart(run / p["file"], p["inputs"], threads) for name, p in manifest["parts"].items()}
    return task_spec.onnx(run, settings_of(task_spec, config, str(run / CONFIG_FILE)), parts)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and a pointer to --help, as the task commands do
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m seqnlp.export --model RUN_DIR --format onnx --output DIR`."""
    return _main(list(sys.argv[1:] if argv is None else argv))


@cli_main
def _main(argv: list[str]) -> int:
    p = _Parser(prog="python -m seqnlp.export", description="Export a trained run for serving without PyTorch.")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run folder written by training (or user/repo)")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="onnx (default): graphs for onnxruntime")
    p.add_argument("--output", required=True, metavar="DIR", help="folder to write the export into")
    args = p.parse_args(argv)
    manifest = export_onnx(args.model, args.output)
    for part in manifest["parts"].values():
        print(f"{Path(args.output) / part['file']}: {', '.join(part['inputs'])} → {', '.join(part['outputs'])} "
              f"(max |ONNX - PyTorch| {part['max_abs_diff']:.2g} on its example)")
    print(f"\nUse it:\n  import seqnlp.export\n  model = seqnlp.export.load_onnx(\"{args.output}\")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
