"""The leaderboard: score models on fixed benchmarks, keep the results, print ranked tables.

    python -m seqnlp.leaderboard run sst2 --model runs/sentiment-...   # evaluate a trained run
    python -m seqnlp.leaderboard run sst2 --time-budget 10              # train the reference config
    python -m seqnlp.leaderboard run --baselines                        # non-neural baselines
    python -m seqnlp.leaderboard show                                   # ranked Markdown tables
    python -m seqnlp.leaderboard verify [FILE ...]                      # score stored outputs again

Bring your own model: `evaluate(model, "sst2")` scores any object that follows the protocol of the
benchmark's task kind, with the same metric code that scores seqnlp's own runs:

- sentiment:   `model.predict(texts: list[str]) -> list[int | str]` (label ids or label names; dicts
               with a "label" key, as `seqnlp.load(run).predict` returns, are accepted too);
- generation:  `model.log_prob(text: str) -> float`, the total natural-log probability of the
               text's characters, each given the ones before it (`score` is accepted as the same);
- translation: `model.translate(texts: list[str]) -> list[str]` (detokenized), and optionally
               `model.target_nll(sources, targets) -> (total_nll_nats, target_tokens)` for perplexity.

Only results whose benchmark version equals the benchmark file's current version, on its scored split,
are ranked. Published numbers from tasks/references.toml are shown beside each table, never ranked.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqnlp import scoring
from seqnlp.benchmark import NOT_BENCHMARKS, Benchmark, list_benchmarks, load_benchmark, tasks_dir
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.metrics import Score
from seqnlp.results import append_result, iter_results, read_outputs, read_result
from seqnlp.tasks import spec

def evaluate(model: Any, benchmark: str | Path | Benchmark, *, split: str | None = None, limit: int | None = None,
             data_dir: str | Path | None = None) -> dict[str, Score]:
    """Score a bring-your-own model on a benchmark; returns {metric name: Score} (`seqnlp.scoring.score`).

    `split` is a role: "test" (default: the benchmark's scored split), "validation" (its model-selection
    split, carved from train when so declared) or "train". `limit` scores only the first `limit` rows.
    """
    evaluation = scoring.score(model, benchmark, split or "test", limit=limit, data_dir=data_dir)
    return {s.name: s for s in evaluation.scores}


# ----------------------------------------------------------------------------------------------
# References (published numbers)


_REF_REQUIRED = ("system", "metric", "value", "notes", "source")
_REF_OPTIONAL = ("params",)


def load_references(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Published numbers from tasks/references.toml: a list of {benchmark, system, metric, value, notes, source,
    params}. Refused (SeqnlpError naming file and key) when malformed; [] when the file does not exist."""
    from seqnlp.benchmark import METRIC_DIRECTIONS, tomllib

    if path is None:
        try:
            path = tasks_dir() / "references.toml"
        except SeqnlpError:
            return []
    path = Path(path)
    if not path.is_file():
        return []
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SeqnlpError(f"{path}: not valid TOML ({err}); fix the file") from None
    out = []
    for bench, rows in raw.items():
        if not isinstance(rows, list):
            raise SeqnlpError(f"{path}: {bench}: must be an array of tables ([[{bench}]])")
        for i, row in enumerate(rows):
            where = f"{path}: {bench}[{i}]"
            unknown = sorted(set(row) - set(_REF_REQUIRED) - set(_REF_OPTIONAL))
            missing = [k for k in _REF_REQUIRED if k not in row]
            if unknown or missing:
                raise SeqnlpError(f"{where}.{(unknown or missing)[0]}: {'unknown' if unknown else 'missing'} key")
            if row["metric"] not in METRIC_DIRECTIONS:
                raise SeqnlpError(f"{where}.metric: unknown metric {row['metric']!r}")
            if isinstance(row["value"], bool) or not isinstance(row["value"], (int, float)):
                raise SeqnlpError(f"{where}.value: must be a number")
            out.append({"benchmark": bench, "params": row.get("params"), **row, "value": float(row["value"])})
    return out


# ----------------------------------------------------------------------------------------------
# Ranking and tables


def rank(entries: Sequence[tuple[Path, dict[str, Any]]], bench: Benchmark) -> tuple[
        list[tuple[int, Path, dict[str, Any]]], list[tuple[Path, str]]]:
    """Rank results of one benchmark by its primary metric, best first (ties share a rank).

    Returns (ranked [(rank, path, result)], not ranked [(path, reason)]): results of another version,
    another split, or without the primary metric are not ranked.
    """
    ok, skipped = [], []
    scored = bench.split_name()  # as results record it: a carved test part is spelled out
    for path, r in entries:
        if r["version"] != bench.version:
            skipped.append((path, f"stale: benchmark version {r['version']}, current is {bench.version}"))
        elif r["split"] != scored:
            skipped.append((path, f"split {r['split']!r} is not the scored split {scored!r}"))
        elif bench.metric not in r["metrics"]:
            skipped.append((path, f"no {bench.metric} metric"))
        else:
            ok.append((path, r))
    sign = -1.0 if bench.higher_is_better else 1.0
    ok.sort(key=lambda pr: (sign * pr[1]["metrics"][bench.metric]["value"], pr[1]["date"], str(pr[0])))
    ranked, prev, prev_rank = [], None, 0
    for i, (path, r) in enumerate(ok, start=1):
        value = r["metrics"][bench.metric]["value"]
        prev_rank = prev_rank if value == prev else i
        prev = value
        ranked.append((prev_rank, path, r))
    return ranked, skipped


def _fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if metric in ("nats_per_char", "bits_per_char") else f"{value:.2f}"


def _fmt_params(n: Any) -> str:
    if n is None:
        return "–"
    if isinstance(n, str):
        return n
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _fmt_hardware(h: dict[str, Any]) -> str:
    if h.get("gpu"):
        return str(h["gpu"])
    cpu = re.sub(r"\((R|TM)\)|CPU @.*|\s+Processor", "", str(h.get("cpu", "?"))).strip()
    cpu = re.sub(r"\s+", " ", cpu)
    threads = h.get("torch_threads") or h.get("cpu_count")
    return f"{cpu}, {threads} threads" if threads else cpu


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _arrow(metric: str) -> str:
    from seqnlp.benchmark import METRIC_DIRECTIONS

    return "↑" if METRIC_DIRECTIONS.get(metric, True) else "↓"


def verify_result(path: str | Path, result: dict[str, Any] | None = None) -> tuple[str, str]:
    """Score a result's stored outputs again against its benchmark's references: (status, message).

    status: "verified" (every metric recomputed equal), "mismatch" (a metric differs, or the outputs were
    changed), "no outputs" (the result stores none), or "unverifiable" (its benchmark or split cannot be read).
    """
    path = Path(path)
    try:
        result = result if result is not None else read_result(path)
        outputs = read_outputs(path, result)
    except SeqnlpError as err:
        return "mismatch", str(err)
    if outputs is None:
        return "no outputs", "the result stores no outputs of the model, so its numbers cannot be checked"
    try:
        bench = load_benchmark(result["benchmark"])
    except SeqnlpError as err:
        return "unverifiable", str(err)
    if bench.version != result["version"]:
        return "unverifiable", f"benchmark version {result['version']}, the file is now version {bench.version}"
    role = next((r for r in scoring.SPLIT_ROLES if bench.split_name(r) == result["split"]), None)
    if role is None:
        return "unverifiable", f"split {result['split']!r} is none of {bench.name}'s train/validation/test"
    try:
        again = scoring.measure(outputs, bench, role).values()
    except (SeqnlpError, KeyError, TypeError, ValueError) as err:
        return "mismatch", f"the stored outputs cannot be scored ({err})"
    wrong = [f"{name} {m['value']!r} (recomputed {again.get(name)!r})" for name, m in result["metrics"].items()
             if name not in again or abs(again[name] - m["value"]) > 1e-9 * max(1.0, abs(m["value"]))]
    if wrong:
        return "mismatch", "the stored outputs score differently: " + "; ".join(wrong)
    return "verified", f"{len(result['metrics'])} metrics recomputed from the stored outputs"


VERIFIED_MARK = {"verified": "✓", "no outputs": "no outputs", "mismatch": "✗ MISMATCH", "unverifiable": "?"}


def render_markdown(results_dir: str | Path = "results", *, references: bool = True,
                    benchmarks: Sequence[str] | None = None) -> str:
    """The leaderboard as Markdown: one ranked table per benchmark, then its published references."""
    errors: list[tuple[Path, str]] = []
    entries = iter_results(results_dir, errors=errors)
    refs = load_references() if references else []
    names = list(benchmarks) if benchmarks else list_benchmarks()
    by_bench: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, r in entries:
        by_bench.setdefault(r["benchmark"], []).append((path, r))
    lines: list[str] = []
    for name in names:
        bench = load_benchmark(name)
        others = [m for m in bench.metrics if m != bench.metric]
        lines += [f"### {bench.name}: {bench.metric} {_arrow(bench.metric)} on `{bench.split_name()}` "
                  f"(benchmark version {bench.version})", ""]
        ranked, skipped = rank(by_bench.pop(bench.name, []), bench)
        head = ["rank", "model", f"{bench.metric} {_arrow(bench.metric)}"] + [f"{m} {_arrow(m)}" for m in others] + [
            "params", "seed", "train time", "hardware", "date", "verified"]
        if ranked:
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for rk, path, r in ranked:
                m = r["metrics"]
                row = [str(rk), _cell(r["model"]), _fmt_value(bench.metric, m[bench.metric]["value"])]
                row += [_fmt_value(o, m[o]["value"] if o in m else None) for o in others]
                row += [_fmt_params(r["params"]), "–" if r.get("seed") is None else str(r["seed"]),
                        _fmt_seconds(r["train_seconds"]),
                        _cell(_fmt_hardware(r["hardware"])), r["date"][:10],
                        VERIFIED_MARK[verify_result(path, r)[0]]]
                lines.append("| " + " | ".join(row) + " |")
        else:
            lines.append("No results yet.")
        lines.append("")
        if skipped:
            lines.append(f"Not ranked ({len(skipped)}):")
            lines += [f"- `{_cell(p)}`: {why}" for p, why in skipped]
            lines.append("")
        bench_refs = [r for r in refs if r["benchmark"] == bench.name]
        if bench_refs:
            lines += ["Published references (not seqnlp runs, not ranked; most are measured differently, see notes):",
                      "", "| rank | system | metric | value | params | notes | source |", "|---|---|---|---|---|---|---|"]
            for r in bench_refs:
                lines.append(f"| ref | {_cell(r['system'])} | {r['metric']} {_arrow(r['metric'])} | "
                             f"{_fmt_value(r['metric'], r['value'])} | {_cell(r['params'] or '–')} | "
                             f"{_cell(r['notes'])} | {_cell(r['source'])} |")
            lines.append("")
    leftover = [(p, f"benchmark {b!r} is not among the benchmarks shown") for b, es in sorted(by_bench.items())
                for p, _ in es if not benchmarks]
    problems = leftover + [(p, f"unreadable: {msg}") for p, msg in errors]
    if problems:
        lines.append(f"Skipped result files ({len(problems)}):")
        lines += [f"- `{_cell(p)}`: {_cell(why)}" for p, why in problems]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


MARK_START, MARK_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def update_between_markers(path: str | Path, text: str) -> None:
    """Replace what lies between the leaderboard markers in `path` (e.g. README.md) with `text`, atomically."""
    from seqnlp.io import atomic_write_bytes

    path = Path(path)
    try:
        doc = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror}") from None
    start, end = doc.find(MARK_START), doc.find(MARK_END)
    if start < 0 or end < start:
        raise SeqnlpError(f"{path} has no {MARK_START} ... {MARK_END} block; add the two lines where the "
                          "tables belong")
    new = doc[: start + len(MARK_START)] + "\n" + text.rstrip() + "\n" + doc[end:]
    atomic_write_bytes(path, new.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# Running models and baselines


def _bench_arg(bench: Benchmark) -> str:
    # Task modules accept a name or a path; pass the name for the standard benchmarks.
    try:
        if bench.path is not None and bench.path.parent == tasks_dir().resolve():
            return bench.name
    except SeqnlpError:
        pass
    return str(bench.path) if bench.path is not None else bench.name


def _call_task(bench: Benchmark, argv: list[str], results_dir: Path) -> dict[str, Any]:
    """Run a task module's main with `argv` + --results, then append its validated result."""
    from seqnlp.tasks import runner, spec

    with tempfile.TemporaryDirectory(prefix="seqnlp-leaderboard-") as tmp:
        file = Path(tmp) / "result.json"
        status = runner.main(spec(bench.task), [*argv, "--results", str(file)])
        if status:
            raise SeqnlpError(f"seqnlp.tasks.{bench.task} {argv[0]} exited with status {status}; see its message above")
        if not file.is_file():
            raise SeqnlpError(f"seqnlp.tasks.{bench.task} {argv[0]} wrote no results file")
        result = read_result(file)
        outputs = read_outputs(file, result)
    if result["benchmark"] != bench.name or result["version"] != bench.version:
        raise SeqnlpError(f"the task wrote a result for {result['benchmark']} v{result['version']}, expected "
                          f"{bench.name} v{bench.version}")
    path = append_result(results_dir, result, outputs)
    _report(result, path, bench)
    return result


def _report(result: dict[str, Any], path: Path, bench: Benchmark) -> None:
    value = result["metrics"].get(bench.metric, {}).get("value")
    print(f"{bench.name}: {result['model']}: {bench.metric} = {_fmt_value(bench.metric, value)} → {path}")


def _run_benchmark_of(run_dir: Path, given: list[Benchmark]) -> Benchmark:
    from seqnlp.tasks.runner import _source_values, read_config

    _, config = read_config(run_dir)
    source = _source_values(config)
    named = None if source.get("dataset") else source.get("benchmark") or spec(config["task"]).default_benchmark
    if len(given) == 1:
        bench = given[0]
    elif named:
        bench = load_benchmark(named)
    else:
        raise SeqnlpError(f"{run_dir} does not record its benchmark; name exactly one benchmark before --model")
    if bench.task != config["task"]:
        raise SeqnlpError(f"{run_dir} is a {config['task']} run but {bench.name} is a {bench.task} benchmark")
    return bench


def run(benchmarks: Sequence[str], *, models: Sequence[str] = (), baselines: bool = False, train: bool = False,
        time_budget: float | None = None, results_dir: str | Path = "results", runs_dir: str | Path = "runs") -> int:
    """Evaluate run folders, run baselines and/or train reference configurations; append results."""
    results_dir = Path(results_dir)
    given = [load_benchmark(b) for b in benchmarks]
    chosen = given or [load_benchmark(b) for b in list_benchmarks()]
    train = train or not (models or baselines)
    for run_dir in models:
        run_path = Path(run_dir)
        bench = _run_benchmark_of(run_path, given)
        _call_task(bench, ["evaluate", "--model", str(run_path), "--benchmark", _bench_arg(bench)], results_dir)
    if baselines:
        from seqnlp.baselines import run_baseline

        for bench in chosen:
            start = time.perf_counter()
            result, outputs = run_baseline(bench, results_dir=None)
            path = append_result(results_dir, result, outputs)
            _report(result, path, bench)
            print(f"  wall time {time.perf_counter() - start:.1f} s")
    if train:
        for bench in chosen:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            argv = ["train", "--benchmark", _bench_arg(bench), "--output", str(Path(runs_dir) /
                    f"leaderboard-{bench.name}-{stamp}")]
            if time_budget is not None:
                argv += ["--time-budget", f"{time_budget:g}"]
            _call_task(bench, argv, results_dir)
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    """python -m seqnlp.leaderboard {run,show,list}."""
    parser = argparse.ArgumentParser(prog="python -m seqnlp.leaderboard", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="evaluate run folders, run baselines, or train reference configurations")
    p_run.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                       help="benchmark names or .toml paths (default: all in tasks/)")
    p_run.add_argument("--model", action="append", default=[], metavar="RUN_DIR",
                       help="evaluate this run folder on its benchmark's scored split (repeatable)")
    p_run.add_argument("--baselines", action="store_true", help="run the non-neural baselines")
    p_run.add_argument("--train", action="store_true",
                       help="train the reference configuration (the default when neither --model nor --baselines)")
    p_run.add_argument("--time-budget", type=float, metavar="MIN",
                       help="training budget in minutes per benchmark (default: the task's own)")
    p_run.add_argument("--results-dir", default="results", help="where results/<benchmark>/*.json go")
    p_run.add_argument("--runs-dir", default="runs", help="where trained run folders go")
    p_show = sub.add_parser("show", help="print the ranked tables")
    p_show.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help="only these benchmarks")
    p_show.add_argument("--results-dir", default=None, help="folder of results JSON files (default: results)")
    p_show.add_argument("--format", choices=["markdown"], default="markdown")
    p_show.add_argument("--no-references", action="store_true", help="leave out published numbers")
    p_show.add_argument("--output", metavar="FILE", help="write the tables here instead of stdout")
    p_show.add_argument("--update", metavar="FILE",
                        help=f"replace the text between {MARK_START} and {MARK_END} in FILE (e.g. README.md)")
    p_verify = sub.add_parser("verify", help="score each result's stored outputs again and flag any mismatch")
    p_verify.add_argument("files", nargs="*", metavar="FILE", help="results files (default: every one under "
                          "--results-dir)")
    p_verify.add_argument("--results-dir", default="results", help="folder of results JSON files")
    sub.add_parser("list", help="list the benchmarks")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in list_benchmarks():
            b = load_benchmark(name)
            print(f"{name}\tv{b.version}\t{b.task}\t{b.metric} {_arrow(b.metric)} on {b.split_name()}")
        return 0
    if args.command == "verify":
        files = [Path(f) for f in args.files] or [p for p, _ in iter_results(args.results_dir)]
        if not files:
            raise SeqnlpError(f"no results files to verify under {args.results_dir}")
        statuses = []
        for file in files:
            status, message = verify_result(file)
            statuses.append(status)
            print(f"{VERIFIED_MARK[status]:<12} {file}: {message}")
        counts = {s: statuses.count(s) for s in VERIFIED_MARK if s in statuses}
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
        return 0 if set(counts) == {"verified"} else 1  # missing outputs are flagged too
    if args.command == "show":
        for b in args.benchmarks:
            if b in NOT_BENCHMARKS:
                raise SeqnlpError(f"{b} is not a benchmark")
        results_dir = Path(args.results_dir or "results")
        if not results_dir.is_dir():
            if args.results_dir is not None:  # a typo'd folder must not pass for an empty leaderboard
                raise SeqnlpError(f"--results-dir {results_dir} is not a folder; give the folder that "
                                  "`python -m seqnlp.leaderboard run` wrote results to")
            print(f"note: no {results_dir}/ folder here yet, so there are no runs to rank; "
                  "`python -m seqnlp.leaderboard run` makes some", file=sys.stderr)
        text = render_markdown(results_dir, references=not args.no_references, benchmarks=args.benchmarks)
        if args.update:
            update_between_markers(args.update, text)
        if args.output:
            from seqnlp.io import atomic_write_bytes

            atomic_write_bytes(args.output, text.encode("utf-8"))
        elif not args.update:
            sys.stdout.write(text)
        return 0
    if args.time_budget is not None and not args.time_budget > 0:
        raise SeqnlpError(f"--time-budget must be more than 0 minutes, not {args.time_budget}")
    return run(args.benchmarks, models=args.model, baselines=args.baselines, train=args.train,
               time_budget=args.time_budget, results_dir=args.results_dir, runs_dir=args.runs_dir)


if __name__ == "__main__":
    sys.exit(main())
