"""Serving under load: requests/s and latency of `python -m seqnlp.serve` with dynamic batching against batch size 1.

    python benchmarks/serve_load.py --model RUN_DIR [--requests 2000] [--clients 32] [--rounds 1]

RUN_DIR is a sentiment run, e.g. one trained on SST-2 in under a minute:

    python -m seqnlp.tasks.sentiment --benchmark sst2 --pretrain '' --no-freeze-embedding --time-budget 0.5 --output runs/sst2-small

Two real uvicorn servers run in subprocesses on 127.0.0.1: one with the default batching, one with --max-batch 1.
Each round sends `--requests` classify requests of one sentence each to one server, then the other, from
`--clients` concurrent keep-alive connections that each send their next request when the last one is answered.
Printed per round and server: requests/s, p50/p99 latency, answers that were not 200, requests lost (no answer),
and the mean number of texts per forward pass (from /health); then the ratio of requests/s, with the CPU model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    """Send `requests` classify requests from `clients` concurrent keep-alive connections; latencies and failures.

    The requests are written on plain asyncio streams: httpx's own per-request cost caps the load one Python
    process can offer below what a batching server answers (on /health, on this 2-core CPU: 300 req/s with an
    httpx client, 808 with this one, against the same server).
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    failures = {"not_200": 0, "5xx": 0, "lost": 0}
    sent = 0

    async def client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        while sent < requests:
            i = sent
            sent += 1
            body = json.dumps({"texts": [SENTENCES[i % len(SENTENCES)]]}).encode()
            start = time.perf_counter()
            try:
                writer.write(b"POST /models/sst2/classify HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
                answer = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, StopIteration):
                failures["lost"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                continue
            latencies.append(time.perf_counter() - start)
            status = int(head[0].split()[1])
            if status != 200 or len(json.loads(answer)["results"]) != 1:
                failures["not_200"] += 1
                failures["5xx"] += status >= 500
        writer.close()

    before = httpx.get(url + "/health").json()["batches"]["sst2"]
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    after = httpx.get(url + "/health").json()["batches"]["sst2"]
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
        ratios = []
        for round_ in range(1, args.rounds + 1):
            rps = {}
            # ABBA order: load from other processes drifts, and alternating spreads it over both servers
            for name in (list(servers) if round_ % 2 else list(servers)[::-1]):
                r = asyncio.run(load(servers[name][1], args.requests, args.clients))
                rps[name] = r["rps"]
                print(f"{round_:>5}  {name:<26} {r['answered']:>8} {r['not_200']:>7} {r['5xx']:>4} {r['lost']:>4} "
                      f"{r['rps']:>8.1f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['batch']:>10.2f}", flush=True)
            ratios.append(rps["batched (default)"] / rps["unbatched (--max-batch 1)"])
        print(f"\nrequests/s, batched / unbatched: {statistics.median(ratios):.2f}x, the median of the rounds' "
              f"{', '.join(f'{x:.2f}x' for x in ratios)}")
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
