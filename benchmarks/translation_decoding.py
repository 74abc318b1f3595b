"""Greedy vs beam search on a trained translation run: BLEU, chrF and sentences/s, measured in one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/translation_decoding.py --model runs/translation-... --beams 1 5

Every beam size decodes the same split of the run's benchmark (default: test) with the same model, in the
order given; wall time covers decoding only (tokenization, model loading and scoring excluded), after one
warm-up batch. Prints one line per beam size and the beam/greedy ratios, and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from seqnlp import metrics
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.io import atomic_write_json
from seqnlp.summary import describe_precision
from seqnlp.tasks import translation as tr
from seqnlp.tasks.runner import SourceConfig, benchmark_of, read_config


def _source(config: dict) -> SourceConfig:
    from seqnlp.tasks.runner import _source_values

    values = _source_values(config)
    return SourceConfig(**values)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="translation run folder")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5], help="beam sizes (1 = greedy)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per decoding batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.beams):
        raise SeqnlpError("beam sizes must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    translator = tr.load(args.model)
    _, config = read_config(args.model, "translation")
    bench = benchmark_of("translation", _source(config), tr.DEFAULT_BENCHMARK)
    ds, split_where = bench.load_split(args.split), bench.split_name(args.split)
    sources, refs = list(ds[bench.columns["source"]]), list(ds[bench.columns["target"]])
    corpus = translator._corpus(sources, refs, split_where)
    batch_size = args.batch_size or translator.data_config.eval_batch_size
    decode = translator.decode_config
    # warm-up: one small batch through both code paths (allocations, oneDNN kernel selection)
    warm = tr.Corpus(sources[:8], refs[:8], corpus.source_ids[:8], None)
    for beam in sorted(set(args.beams)):
        tr.decode_ids(translator.model, warm, decode, beam, batch_size, translator.device)
    rows = []
    for beam in args.beams:
        begin = time.perf_counter()
        ids = tr.decode_ids(translator.model, corpus, decode, beam, batch_size, translator.device)
        seconds = time.perf_counter() - begin
        hyps = translator.target_tokenizer.decode_batch(ids)
        bleu, chrf = metrics.bleu(hyps, refs), metrics.chrf(hyps, refs)
        rows.append({"beam": beam, "bleu": bleu.value, "chrf": chrf.value, "seconds": seconds,
                     "sentences_per_second": len(sources) / seconds, "signature": bleu.signature})
        print(f"beam {beam:>2}: BLEU {bleu.value:6.2f}  chrF {chrf.value:6.2f}  {seconds:7.2f} s  "
              f"{len(sources) / seconds:8.1f} sentences/s", flush=True)
    base = rows[0]
    where = describe_precision(translator.model, translator.device, "fp32", batch_size)  # decoding runs outside autocast
    for row in rows[1:]:
        print(f"beam {row['beam']} vs beam {base['beam']}: BLEU {row['bleu'] - base['bleu']:+.2f}, "
              f"speed x{row['sentences_per_second'] / base['sentences_per_second']:.2f}  [{where}]")
    print(f"split {split_where}, {len(sources)} sentences, batch {batch_size}, {torch.get_num_threads()} threads; "
          f"{rows[0]['signature']}")
    if args.json:
        atomic_write_json(args.json, {"model": str(args.model), "split": split_where, "sentences": len(sources),
                                      "precision": where,
                                      "batch_size": batch_size, "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
