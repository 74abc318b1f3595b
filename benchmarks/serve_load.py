"""Serving under load: requests/s and latency of `python -m seqnlp.serve` with dynamic batching against batch size 1.

    python benchmarks/serve_load.py --model RUN_DIR [--requests 2000] [--clients 32] [--rounds 1]

RUN_DIR is a sentiment run, e.g. one trained on SST-2 in under a minute:

    python -m seqnlp.tasks.sentiment --benchmark sst2 --pretrain '' --no-freeze-embedding --time-budget 0.5 --output runs/sst2-small

Two real uvicorn servers run in subprocesses on 127.0.0.1: one with the default batching, one with --max-batch 1.
Each round sends `--requests` classify requests of one sentence each to one server, then the other, from
`--clients` concurrent asyncio clients (httpx) that each send their next request when the last one is answered.
Printed per round and server: requests/s, p50/p99 latency, answers that were not 200, requests lost (no answer),
and the mean number of texts per forward pass (from /health); then the ratio of requests/s, with the CPU model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

# SST-2-like sentences of varied length (the client cycles through them).
SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine .",
    "an utterly charming and hilarious film that reminded me of the best of the marx brothers .",
    "it 's a lot of stuff that seems to have been put together by committee , without much thought for the story .",
    "a thoughtful , provocative , insistently humanizing film .",
    "the acting is amateurish and the script is even worse .",
    "this is one of those rare pictures that you root for throughout , even when it falters .",
    "bland , predictable and way too long .",
    "a moving and important film about the cost of war on the families left behind .",
    "i hated every minute of it .",
    "the performances are uniformly excellent , and the direction is assured and subtle .",
    "too slow , too long and too little happens .",
    "it 's a funny , sweet and surprisingly touching little comedy .",
    "what a waste of a talented cast .",
    "the story twists and turns in ways you never see coming , and the ending is perfect .",
    "dull , lifeless and badly edited , it never finds its footing .",
]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, max_batch: int | None) -> tuple[subprocess.Popen, str]:
    """`python -m seqnlp.serve` on a free loopback port (not yet ready: see `wait_ready`)."""
    port = free_port()
    command = [sys.executable, "-m", "seqnlp.serve", "--model", f"sst2={run}", "--port", str(port),
               "--log-level", "warning", *(["--max-batch", str(max_batch)] if max_batch else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL), f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds  # generous: on a loaded machine importing torch alone takes minutes
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server at {url} exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"error: the server at {url} did not answer /health within {seconds:.0f} s")


async def load(url: str, requests: int, clients: int) -> dict[str, float]:
    """Send `requests` classify requests from `clients` concurrent clients; latencies and failures."""
    latencies: list[float] = []
    failures = {"not_200": 0, "5xx": 0, "lost": 0}
    sent = 0

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            i = sent
            sent += 1
            start = time.perf_counter()
            try:
                r = await c.post("/models/sst2/classify", json={"texts": [SENTENCES[i % len(SENTENCES)]]})
            except httpx.HTTPError:
                failures["lost"] += 1
                continue
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200 or len(r.json()["results"]) != 1:
                failures["not_200"] += 1
                failures["5xx"] += r.status_code >= 500

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        before = (await c.get("/health")).json()["batches"]["sst2"]
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        seconds = time.perf_counter() - start
        after = (await c.get("/health")).json()["batches"]["sst2"]
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    calls = after["calls"] - before["calls"]
    return {"answered": len(latencies), **failures, "rps": len(latencies) / seconds, "p50": cuts[49] * 1000,
            "p99": cuts[98] * 1000, "batch": (after["texts"] - before["texts"]) / max(calls, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a sentiment run folder")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=100, help="requests sent to each server before measuring")
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").exists():
        sys.exit(f"error: {args.model} is not a run folder (no config.json)")

    servers = {"batched (default)": start_server(args.model, None), "unbatched (--max-batch 1)": start_server(args.model, 1)}
    try:
        for proc, url in servers.values():
            wait_ready(proc, url)
        for _, url in servers.values():
            asyncio.run(load(url, args.warmup, args.clients))
        print(f"CPU: {cpu_model()}; {os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
              f"load average {os.getloadavg()[0]:.2f} at the start")
        print(f"{args.requests} classify requests of one sentence from {args.clients} concurrent clients, per round\n")
        print(f"{'round':>5}  {'server':<26} {'answered':>8} {'not 200':>7} {'5xx':>4} {'lost':>4} {'req/s':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'texts/pass':>10}")
        totals: dict[str, list[float]] = {name: [] for name in servers}
        for round_ in range(1, args.rounds + 1):
            for name, (_, url) in servers.items():
                r = asyncio.run(load(url, args.requests, args.clients))
                totals[name].append(r["rps"])
                print(f"{round_:>5}  {name:<26} {r['answered']:>8} {r['not_200']:>7} {r['5xx']:>4} {r['lost']:>4} "
                      f"{r['rps']:>8.1f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['batch']:>10.2f}", flush=True)
        batched, unbatched = (statistics.median(v) for v in totals.values())
        print(f"\nrequests/s, batched / unbatched: {batched / unbatched:.2f}x (median over {args.rounds} round(s))")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
