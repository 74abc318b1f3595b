"""A run folder's model card: README.md in the Hugging Face hub's format, so the folder can be pushed as it is.

Written at the end of training and refreshed by `evaluate` (seqnlp.tasks.runner). The YAML front matter is
huggingface_hub's `ModelCardData`: library_name seqnlp, license, the pipeline tag and tags, the datasets, the
metrics, and every evaluation_<split>.json of the folder as model-index results. The body says what the model is,
how it was trained (configuration, time, hardware), its evaluation with each metric's signature (sacreBLEU's for
translation), and how to load it: `seqnlp.load("user/repo")`, the task's command line, the ONNX export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqnlp import __version__
from seqnlp.benchmark import load_benchmark
from seqnlp.errors import SeqnlpError
from seqnlp.io import atomic_write_bytes, read_json
from seqnlp.tasks import KINDS

CARD_FILE = "README.md"
LICENSE = "mit"  # seqnlp's; the data a model was trained on keeps its own terms
EXAMPLES = {  # one library call per kind, for "How to use"
    "sentiment": 'model.predict(["a great film", "a dull film"])',
    "generation": 'model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1)',
    "translation": 'model.translate(["Ein Hund läuft im Schnee."], beam=5)',
    "tagging": 'model.tag(["El presidente de Francia visitó Madrid ayer."])',
}


def _benchmark(name: str) -> Any:
    try:
        return load_benchmark(name)
    except SeqnlpError:  # a benchmark file no longer here: the card names it without its dataset
        return None


def _signature(evaluation: dict[str, Any], metric: str) -> str:
    return str(evaluation.get("signatures", {}).get(metric, "")).replace("|", "\\|")  # a table cell keeps its pipes


def _hardware(info: dict[str, Any]) -> str:
    return (f"{info.get('cpu', 'unknown CPU')}, {info.get('cpu_count', '?')} cores, "
            f"{info.get('torch_threads', '?')} torch threads" + (f", GPU {info['gpu']}" if info.get("gpu") else ""))


def write_card(run_dir: str | Path, task_spec: Any, settings: dict[str, Any], params: int,
               hardware: dict[str, Any] | None = None, repo_id: str = "user/repo") -> Path:
    """Write RUN_DIR/README.md from its config.json, metrics.json and evaluation_*.json files.

    `hardware` (seqnlp.results.hardware()) is the training machine, given at the end of training; a refresh keeps
    the one the card already names. `repo_id` is the hub repository the examples load from.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run, task = Path(run_dir), task_spec.name
    kind, path = KINDS[task], run / CARD_FILE
    config, trained = read_json(run / "config.json"), read_json(run / "metrics.json") if (run / "metrics.json").exists() else {}
    machine = _hardware(hardware) if hardware else (
        ModelCard.load(path, ignore_metadata_errors=True).data.to_dict().get("training_hardware") if path.exists() else None)
    evaluations = [read_json(f) for f in sorted(run.glob("evaluation_*.json"))]
    benches = {e["benchmark"]: _benchmark(e["benchmark"]) for e in evaluations}
    datasets = {name: b.hub_id if b is not None and b.hub_id and not b.hub_id.startswith((".", "/")) else name
                for name, b in benches.items()}
    name = task_spec.describe(settings)
    results = [EvalResult(task_type=kind.pipeline, task_name=task, dataset_type=datasets[e["benchmark"]],
                          dataset_name=e["benchmark"], dataset_split=e["split"], metric_type=m, metric_name=m,
                          metric_value=round(e[m], 4), verified=False)
               for e in evaluations for m in kind.metrics if isinstance(e.get(m), (int, float))]
    data = ModelCardData(library_name="seqnlp", license=LICENSE, pipeline_tag=kind.pipeline, model_name=name,
                         tags=["seqnlp", "pytorch", "rnn", task], datasets=sorted(set(datasets.values())) or None,
                         metrics=list(kind.metrics), eval_results=results or None, training_hardware=machine)

    bench = next((b for b in benches.values() if b is not None), None)
    lines = [f"# {name}", "", f"A seqnlp {task} model: {name}, {params:,} parameters.", "", "## Training", ""]
    if bench is not None:
        lines.append(f"Data: benchmark `{bench.name}` version {bench.version} ({datasets[bench.name]}; "
                     f"{bench.description.rstrip('.')}): trained on its `{bench.train_split}` split, the model chosen on "
                     f"{'`' + bench.validation_split + '`' if bench.validation_split else 'a part carved from train'}.")
    if trained:
        seconds = trained.get("train_seconds", 0)
        lines.append(f"{trained.get('steps')} steps, {trained.get('epochs', 0):g} epochs in "
                     + (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min")
                     + f" (stopped by {trained.get('stopped')}); best validation {trained.get('metric')} "
                     f"{trained.get('best_metric', float('nan')):.4g} at step {trained.get('best_step')}.")
    lines += [f"Hardware: {machine or 'not recorded'}.", "", "Configuration (`config.json`):", "", "```json",
              json.dumps(config, indent=2, ensure_ascii=False), "```", "", "## Evaluation", ""]
    if evaluations:
        lines += ["| benchmark | split | metric | value | signature |", "|---|---|---|---|---|"]
        lines += [f"| {e['benchmark']} | {e['split']} | {m} | {e[m]:.4f} | `{_signature(e, m)}` |"
                  for e in evaluations for m in kind.metrics if isinstance(e.get(m), (int, float))]
    else:
        lines.append("Not evaluated yet.")
    module = f"python -m seqnlp.tasks.{task}"
    lines += ["", "## How to use", "", "```python", "import seqnlp", "",
              f'model = seqnlp.load("{repo_id}")  # through huggingface_hub\'s cache (HF_HUB_OFFLINE=1: the cache only)',
              EXAMPLES.get(task, "model"), "```", "", "From the command line:", "", "```bash",
              *(line.format(run=repo_id, module=module) for line in task_spec.usage),
              f"python -m seqnlp.export --model {repo_id} --format onnx --output onnx/  # for onnxruntime",
              "```", "", f"Card written by seqnlp {__version__}.", ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    atomic_write_bytes(path, str(card).encode("utf-8"))
    return path
