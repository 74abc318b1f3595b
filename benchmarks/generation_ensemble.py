"""What an ensemble of separately trained language models scores: the mean of their next-character distributions.

    python benchmarks/generation_ensemble.py runs/generation-a runs/generation-b [--split validation]

Each run is scored alone and the K runs together, as `seqnlp.tasks.generation.CharEnsemble` (what --ensemble K
trains side by side in one budget) mixes its members, by the task's scoring protocol (each row read from <bos> with
a zero state, the state carried through the row; nats per character). It tells whether K networks would beat one
before a budget is spent training them together (issue 22). The runs must be char models of one tokenizer; an
ensemble run gives each of its networks (RUN#k), so a side-by-side pair can be mixed with runs trained apart.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from torch import nn

import seqnlp
from seqnlp.benchmark import load_benchmark
from seqnlp.errors import SeqnlpError
from seqnlp.tasks.generation import CharEnsemble, CharLM, CharRNN
from seqnlp.tasks.runner import read_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="generation run folders (two or more networks in all)")
    p.add_argument("--split", default="validation", help="validation (default) or test")
    args = p.parse_args(argv)
    loaded = [seqnlp.load(run) for run in args.runs]
    if any(not isinstance(m, CharLM) or not isinstance(m.model, (CharRNN, CharEnsemble)) or m.tokenizer.level != "char"
           for m in loaded):
        raise SeqnlpError("every run must be a character-level generation run")
    _, config = read_config(args.runs[0], "generation")
    precision = config["train"]["precision"]
    # An ensemble run contributes each of its networks, scored alone as RUN#k.
    names, models = [], []
    for run, lm in zip(args.runs, loaded):
        nets = list(lm.model.members) if isinstance(lm.model, CharEnsemble) else [lm.model]
        for k, net in enumerate(nets):
            names.append(f"{run}#{k}" if len(nets) > 1 else run)
            models.append(lm if len(nets) == 1 else CharLM(net, lm.tokenizer, precision=precision))
    if len(models) < 2:
        p.error("give two or more networks (run folders, or an ensemble run)")
    if len({m.tokenizer.to_str() for m in models}) != 1:
        raise SeqnlpError("the runs' tokenizers differ: their distributions cannot be mixed")
    bench = load_benchmark(config["source"]["benchmark"] or "tiny_shakespeare")
    texts = [t for t in bench.load_split(args.split)[bench.columns["text"]] if t]
    for run, lm in zip(names, models):
        print(f"{run}: {lm.score(texts)[0].value:.4f} nats/char", flush=True)
    first = models[0].model
    ensemble = CharEnsemble(replace(first.config, ensemble=len(models)), first.vocab_size, 1, first.pad_id)
    ensemble.members = nn.ModuleList(lm.model for lm in models)
    mixed = CharLM(ensemble, models[0].tokenizer, precision=precision)
    print(f"ensemble of {len(models)} ({bench.name} {args.split}): {mixed.score(texts)[0].value:.4f} nats/char")
    return 0


if __name__ == "__main__":
    sys.exit(main())
