"""The API's front door under abuse: descriptors under a slow-header flood, memory under unauthenticated posts.

    .venv/bin/python bench/front_door.py --label after                  # the working tree
    .venv/bin/python bench/front_door.py --label before --rev <commit>  # a `git archive` of that revision
    .venv/bin/python bench/front_door.py --label after --nofile 2048    # the API limited to 2048 descriptors

Starts a real Redis server and the API (`python -m cli api`, default settings, one token) from the tree under
test; no workers (nothing here reaches them). Two phases, each bounded in count and time:

1. Slow-header flood: `--flood` connections each send a partial request head, then one more header byte every
   2 s (a drip, so timeouts that restart on every read never fire) for `--flood-seconds`. Meanwhile the API's
   open descriptors (/proc/<pid>/fd) are sampled every 20 ms and GET /healthz is probed every 0.5 s on a fresh
   connection (2 s timeout). Reported: peak descriptors, probes answered / failed and the slowest, flood
   connections the server closed by the end.
2. Eight concurrent unauthenticated POST /v1/jobs of a 30 MB JSON body each (httpx, the whole body sent before
   the answer is read). Reported: the API's RSS before, its peak during (sampled every 10 ms), the statuses.

Results are merged into `<out>/front_door.json` under the label and the table `<out>/front_door.md` rewritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python bench/front_door.py`, this directory would shadow nothing, but keep the repo root importable
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from cli.stack import free_port, start_redis, wait_http

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
MB = 1024 * 1024


@contextlib.contextmanager
def tree(rev: str | None) -> Iterator[tuple[Path, str]]:
    """The source tree to run the API from: a `git archive` of `rev`, or the working tree."""
    if rev is None:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip()
        yield ROOT, f"working tree (HEAD {head[:12]} + uncommitted changes)"
        return
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    snap = Path(tempfile.mkdtemp(prefix=f"chainyard-front-door-{commit[:8]}-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
        yield snap, f"git archive of {commit[:12]}"
    finally:
        shutil.rmtree(snap, ignore_errors=True)


def start_api(source: Path, port: int, redis_url: str, log: Path, nofile: int | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINYARD_")}
    env.update({"CHAINYARD_REDIS_URL": redis_url, "CHAINYARD_TOKENS": f"{TOKEN}:bench",
                "PYTHONPATH": str(source)})

    def limit() -> None:
        if nofile is not None:  # soft and hard: the API raises its soft limit to the hard one
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], cwd=source, env=env, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=limit)
    wait_http(proc, f"http://127.0.0.1:{port}/readyz", "the API", log, 60)
    return proc


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """Samples `measure()` every `interval` seconds in a thread; `peak` is the largest value seen."""

    def __init__(self, measure: Any, interval: float) -> None:
        self.measure, self.interval, self.peak = measure, interval, measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.measure())
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def slow_header_flood(port: int, pid: int, connections: int, seconds: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/healthz"
    base = open_fds(pid)
    flood: list[socket.socket] = []
    refused = 0
    probes = {"ok": 0, "failed": 0, "slowest_s": 0.0}
    started = time.monotonic()

    def probe() -> None:
        t = time.monotonic()
        try:
            ok = httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            ok = False
        probes["ok" if ok else "failed"] += 1
        probes["slowest_s"] = max(probes["slowest_s"], round(time.monotonic() - t, 3))

    with Sampler(lambda: open_fds(pid), 0.02) as fds:
        for i in range(connections):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
                flood.append(sock)
            except OSError:
                refused += 1
            if i % 500 == 499:
                probe()
        opened_s = time.monotonic() - started
        next_probe = next_drip = time.monotonic()
        while time.monotonic() - started < seconds:
            now = time.monotonic()
            if now >= next_drip:
                for sock in flood:
                    with contextlib.suppress(OSError):
                        sock.setblocking(True)
                        sock.send(b"a")
                next_drip = now + 2.0
            if now >= next_probe:
                probe()
                next_probe = now + 0.5
            time.sleep(0.05)
        closed = sum(closed_by_server(s) for s in flood)
    for sock in flood:
        sock.close()
    return {"connections": connections, "seconds": seconds, "opened_in_s": round(opened_s, 2),
            "refused_at_connect": refused, "fds_before": base, "fds_peak": fds.peak,
            "closed_by_server": closed, "healthz": probes}


def unauthenticated_posts(port: int, pid: int, count: int = 8, size_mb: int = 30) -> dict[str, Any]:
    body = json.dumps({"model": {"spec": 1, "data": {"y": [0.123456789] * (size_mb * MB // 13)}}}).encode()
    statuses: list[Any] = []

    def post() -> None:
        try:
            statuses.append(httpx.post(f"http://127.0.0.1:{port}/v1/jobs", content=body, timeout=120,
                                       headers={"Content-Type": "application/json"}).status_code)
        except httpx.HTTPError as exc:
            statuses.append(type(exc).__name__)

    before = rss_mb(pid)
    started = time.monotonic()
    with Sampler(lambda: rss_mb(pid), 0.01) as rss:
        posters = [threading.Thread(target=post) for _ in range(count)]
        for t in posters:
            t.start()
        for t in posters:
            t.join(timeout=180)
    return {"posts": count, "body_mb": round(len(body) / MB, 1), "elapsed_s": round(time.monotonic() - started, 2),
            "rss_before_mb": round(before, 1), "rss_peak_mb": round(rss.peak, 1),
            "rss_after_mb": round(rss_mb(pid), 1), "statuses": sorted(map(str, statuses))}


def table(results: dict[str, Any]) -> str:
    lines = ["# Front door: slow-header flood and unauthenticated bodies (`bench/front_door.py`)", "",
             "| run | tree | API fd limit | flood | fds before → peak | flood closed by server | /healthz ok / "
             "failed (slowest s) | 8 x 30 MB unauthenticated: RSS before → peak MB | statuses |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for label, r in results.items():
        f, p = r["flood"], r["posts"]
        h = f["healthz"]
        lines.append(f"| {label} | {r['tree']} | {r['api_nofile']} | {f['connections']} x {f['seconds']:.0f} s | "
                     f"{f['fds_before']} → {f['fds_peak']} | {f['closed_by_server']} | {h['ok']} / {h['failed']} "
                     f"({h['slowest_s']}) | {p['rss_before_mb']} → {p['rss_peak_mb']} | "
                     f"{', '.join(sorted(set(p['statuses'])))} |")
    lines += ["", "Machine: " + next(iter(results.values()))["machine"] + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--rev", default=None, help="benchmark a `git archive` of this revision")
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--nofile", type=int, default=None, help="the API's file-descriptor limit (soft and hard)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the flood's sockets
    if args.flood + 100 > hard:
        raise SystemExit(f"--flood {args.flood} needs more file descriptors than the hard limit {hard}")
    work = Path(tempfile.mkdtemp(prefix="chainyard-front-door-"))
    print(f"[bench] logs in {work}", file=sys.stderr)
    with tree(args.rev) as (source, described):
        redis_port, port = free_port(), free_port()
        redis = start_redis(work / "redis", redis_port, work / "redis.log")
        api = start_api(source, port, f"redis://127.0.0.1:{redis_port}/0", work / "api.log", args.nofile)
        try:
            flood = slow_header_flood(port, api.pid, args.flood, args.flood_seconds)
            time.sleep(1.0)
            posts = unauthenticated_posts(port, api.pid)
        finally:
            for proc in (api, redis):
                proc.terminate()
                proc.wait(timeout=30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "front_door.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = {"tree": described, "api_nofile": args.nofile or soft, "flood": flood, "posts": posts,
                           "date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
                                      f"Python {platform.python_version()}"}
    path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "front_door.md").write_text(table(results))
    print(json.dumps(results[args.label], indent=2))


if __name__ == "__main__":
    main()
