"""ONNX export on real data: the largest difference from PyTorch on each task's validation texts, and onnxruntime
vs PyTorch inference speed at batch 1 and batch 64, measured in one run.

    python benchmarks/onnx_export.py --train runs/onnx-bench          # train four short real-data runs first
    python benchmarks/onnx_export.py --models runs/sentiment-... runs/tagging-... [--threads 2] [--json out.json]

--train trains one short run per task (--time-budget 0.5, each well under a minute of training: sst2, conll2002_es,
tiny_shakespeare, multi30k) into the folder, or reuses the runs already there. Each run is exported
(seqnlp.export) and compared with its PyTorch model in fp32 on the dataset's validation split, in batches of 64
in dataset order (padded):
- sentiment: logits of every text;  tagging: emission scores of every sentence (and the decoded tags);
- generation: 64 contiguous streams of the text, 256 single steps, each side carrying its own state (logits and
  state);  translation: the encoder outputs of every source, then the decoder step teacher-forced along the
  reference, each side carrying its own state (and the greedy translations).
Speed: the median of repeated calls at batch 1 and 64 (classifier and tagger forward, one LM step, a greedy
translation of the batch), onnxruntime vs PyTorch as seqnlp.load runs it (its configured precision) and in
fp32, with the same thread count, the three taking turns in rounds. Prints the CPU model (lscpu), threads and what else was running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import seqnlp
from seqnlp import export
from seqnlp.benchmark import load_benchmark
from seqnlp.data import load_split, pad
from seqnlp.errors import cli_main
from seqnlp.io import atomic_write_json
from seqnlp.tasks.runner import read_config

BATCH = 64
SHORT_RUNS = {  # task → flags of a short real-data run (the benchmark's own model, trained for 30 s)
    "sentiment": ["--benchmark", "sst2", "--pretrain", "", "--ensemble", "1"],
    "tagging": ["--benchmark", "conll2002_es"],
    "generation": ["--benchmark", "tiny_shakespeare"],
    "translation": ["--benchmark", "multi30k_de_en", "--beam", "1"],
}


def train_short_runs(folder: Path) -> list[Path]:
    """One short run per task in `folder` (kept: a second call reuses them)."""
    runs = []
    for task, flags in SHORT_RUNS.items():
        run = folder / task
        if not (run / "model.safetensors").exists():
            cmd = [sys.executable, "-m", f"seqnlp.tasks.{task}", *flags, "--time-budget", "0.5", "--progress", "off",
                   "--no-curves", "--output", str(run), "--overwrite"]
            print("training:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs.append(run)
    return runs


def _max_diff(a: Any, b: Any) -> float:
    pairs = zip(a, b) if isinstance(a, (tuple, list)) else [(a, b)]
    return max(float((x.float() - y.float()).abs().max()) for x, y in pairs)


def _timings(variants: dict[str, Callable[[], Any]], rounds: int = 6, budget: float = 0.25) -> dict[str, float]:
    """Median seconds per call of each variant, the variants taking turns in `rounds` rounds of `budget` seconds
    each, so that a busy spell of the machine weighs on all of them alike."""
    for fn in variants.values():
        fn()  # warm-up: allocations, kernel choice
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            end = time.perf_counter() + budget
            while True:
                begin = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - begin)
                if begin + samples[name][-1] >= end:
                    break
    return {name: statistics.median(times) for name, times in samples.items()}


def _in_fp32(model: torch.nn.Module, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with export.fp32_encoders(model):
            return fn()

    return run


def _state_parts(state: Any) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def compare(task: str, pt: Any, ox: Any, columns: dict[str, list[Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """(max |ONNX - PyTorch fp32| per output, speed callables {batch: (pytorch fn, onnx fn)}) of one task."""
    diffs: dict[str, float] = {}
    if task == "sentiment":
        from seqnlp.data import Batch
        from seqnlp.tasks.sentiment import encode_texts

        texts = [str(t) for t in columns["text"]]
        ids = encode_texts(pt.tokenizer, texts, pt.model.config)
        batches = [Batch(*pad(ids[i:i + BATCH], pt.tokenizer.pad_id)) for i in range(0, len(ids), BATCH)]
        diffs["logits"] = max(_max_diff(pt.model(b).logits, ox.model(b).logits) for b in batches)
        one = Batch(*pad(ids[:1], pt.tokenizer.pad_id))
        speed = {n: (lambda b=b: pt.model(b), lambda b=b: ox.model(b)) for n, b in ((1, one), (BATCH, batches[0]))}
        return diffs, speed
    if task == "tagging":
        sentences = [list(s) for s in columns["tokens"]]
        batches = [pt.encoder.batch(sentences[i:i + BATCH]) for i in range(0, len(sentences), BATCH)]
        diffs["scores"] = max(_max_diff(pt.model(b).logits, ox.model.part(b.ids, b.chars, b.lengths)[0]) for b in batches)
        agree = sum(a == b for a, b in zip(pt.predict_tags(sentences), ox.predict_tags(sentences)))
        diffs["sentences with other tags"] = float(len(sentences) - agree)
        one = pt.encoder.batch(sentences[:1])
        speed = {n: (lambda b=b: pt.model(b), lambda b=b: ox.model.part(b.ids, b.chars, b.lengths))
                 for n, b in ((1, one), (BATCH, batches[0]))}
        return diffs, speed
    if task == "generation":
        text = "".join(str(t) for t in columns["text"])
        ids = torch.tensor(pt.tokenizer.encode(text))
        steps = 256
        streams = ids[:BATCH * (len(ids) // BATCH)].view(BATCH, -1)[:, :steps]  # (64, 256) contiguous streams
        pt_state = ox_state = None
        logits_diff = state_diff = 0.0
        for t in range(streams.shape[1]):
            pt_logits, pt_state = pt.model.step(streams[:, t], pt_state)
            ox_logits, ox_state = ox.model.step(streams[:, t], ox_state)
            logits_diff = max(logits_diff, _max_diff(pt_logits, ox_logits))
            state_diff = max(state_diff, _max_diff(_state_parts(pt_state), _state_parts(ox_state)))
        diffs |= {"logits": logits_diff, "state": state_diff}
        speed = {n: (lambda n=n: pt.model.step(streams[:n, 0], None), lambda n=n: ox.model.step(streams[:n, 0], None))
                 for n in (1, BATCH)}
        return diffs, speed
    from seqnlp.tasks.translation import PAD

    sources, targets = [str(s) for s in columns["source"]], [str(t) for t in columns["target"]]
    corpus = pt._corpus(sources, targets, "validation")
    diffs |= {"encoder": 0.0, "decoder step (teacher-forced)": 0.0}
    for i in range(0, len(sources), BATCH):
        ids, lengths = pad(corpus.source_ids[i:i + BATCH], PAD)  # (B, T), (B,)
        gold, _ = pad(corpus.target_ids[i:i + BATCH], PAD)  # (B, U)
        pt_state, ox_state = pt.model.start(ids, lengths), ox.model.start(ids, lengths)
        diffs["encoder"] = max(diffs["encoder"], _max_diff([*_state_parts(pt_state[0]), pt_state[3], pt_state[4]],
                                                           [*_state_parts(ox_state[0]), ox_state[3], ox_state[4]]))
        for u in range(gold.shape[1] - 1):
            pt_logits, pt_state = pt.model.step(gold[:, u], pt_state)
            ox_logits, ox_state = ox.model.step(gold[:, u], ox_state)
            real = gold[:, u + 1] != PAD  # (B,): rows whose reference goes on
            diff = _max_diff(pt_logits[real], ox_logits[real]) if bool(real.any()) else 0.0
            diffs["decoder step (teacher-forced)"] = max(diffs["decoder step (teacher-forced)"], diff)
    hyps_pt, hyps_ox = pt.translate(sources, beam=1), ox.translate(sources, beam=1)
    diffs["sentences translated otherwise (greedy)"] = float(sum(a != b for a, b in zip(hyps_pt, hyps_ox)))
    speed = {n: (lambda n=n: pt.translate(sources[:n], beam=1), lambda n=n: ox.translate(sources[:n], beam=1))
             for n in (1, BATCH)}
    return diffs, speed


def _others() -> str:
    found = subprocess.run(["pgrep", "-af", "seqnlp.tasks|pytest"], capture_output=True, text=True).stdout
    return "\n".join(line for line in found.splitlines() if line.split()[0] != str(os.getpid()))


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[], help="run folders (any tasks)")
    parser.add_argument("--train", metavar="DIR", help="train (or reuse) one short real-data run per task in DIR")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    parser.add_argument("--no-speed", action="store_true", help="compare outputs only")
    parser.add_argument("--limit", type=int, default=0, help="compare on the first N validation rows (0 = all)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    runs = [Path(m) for m in args.models] + (train_short_runs(Path(args.train)) if args.train else [])
    torch.set_num_threads(args.threads)
    others = _others()
    print(f"CPU: {_cpu()}; threads: {args.threads} (torch and onnxruntime); torch {torch.__version__}")
    print("running beside this benchmark:\n" + others if others else "nothing else of seqnlp running (pgrep)")
    report: dict[str, Any] = {"cpu": _cpu(), "threads": args.threads, "others": others, "tasks": {}}
    for run in runs:
        config = read_config(run)[1]
        task = config["task"]
        bench = load_benchmark(config["source"]["benchmark"])
        ds = load_split(bench.mirror or bench.hub_id, "validation")
        ds = ds.select(range(min(args.limit, len(ds)))) if args.limit else ds
        columns = {role: list(ds[col]) for role, col in bench.columns.items()}
        with tempfile.TemporaryDirectory() as folder:
            export.export_onnx(run, folder)
            pt, ox = seqnlp.load(run), export.load_onnx(folder, threads=args.threads)
            with torch.no_grad():
                with export.fp32_encoders(pt.model):
                    diffs, speed = compare(task, pt, ox, columns)
                timing = {} if args.no_speed else {
                    n: _timings({"pytorch": f, "pytorch_fp32": _in_fp32(pt.model, f), "onnxruntime": g})
                    for n, (f, g) in speed.items()}
        print(f"\n{task} ({bench.name} validation, {len(ds)} rows; {run}):")
        for name, value in diffs.items():
            print(f"  max |ONNX - PyTorch fp32| {name}: {value:.3g}" if "sentences" not in name
                  else f"  {name}: {value:g} of {len(ds)}")
        for n, t in timing.items():
            print(f"  batch {n:>2}: PyTorch {t['pytorch'] * 1e3:8.2f} ms (fp32 {t['pytorch_fp32'] * 1e3:8.2f} ms), "
                  f"onnxruntime {t['onnxruntime'] * 1e3:8.2f} ms: {t['pytorch'] / t['onnxruntime']:.2f}x "
                  f"({t['pytorch_fp32'] / t['onnxruntime']:.2f}x vs fp32)")
        report["tasks"][task] = {"run": str(run), "rows": len(ds), "max_abs_diff": diffs, "seconds": timing}
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
