"""Sample the worker's stacks with py-spy while it runs end to end, and summarise them.

    python -m bench.profile [--events N] [--py-spy PATH]

py-spy is not a project dependency: install it anywhere (``pip install --target /tmp/pyspy
py-spy``) and pass its path, or have ``py-spy`` on PATH. It attaches to the running worker process
(``--nonblocking``: the worker is never paused), records raw collapsed stacks, and this module
prints the functions with the most samples, self and inclusive.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.data import dataset
from bench.e2e import run_worker
from bench.env import create_topic, environment, produce


def summarise(raw: Path, top: int = 30) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"{total} samples (all threads)", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in self_counts.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    parser.add_argument("--idle", action="store_true", help="include idle (waiting) samples")
    parser.add_argument("--drain", action="store_true", help="end by SIGTERM (see bench.e2e)")
    parser.add_argument(
        "--gil", action="store_true", help="only samples of the thread holding the GIL"
    )
    args = parser.parse_args()
    data = dataset(args.events)
    out = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    raw = out / "worker.stacks"
    with environment() as env:
        create_topic(env.bootstrap, "profile")
        ends = produce(env.bootstrap, "profile", data.keys, data.values)
        spy: list[subprocess.Popen[bytes]] = []

        def attach(pid: int) -> None:
            cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(raw)]
            cmd += ["-r", "200", "--nonblocking", "--threads"] + (["--idle"] if args.idle else [])
            cmd += ["--gil"] if args.gil else []
            spy.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        result = run_worker(env, "profile", ends, out, on_start=attach, drain=args.drain)
        for p in spy:
            p.wait(30)
    print(result)
    time.sleep(0.5)
    print(summarise(raw))


if __name__ == "__main__":
    main()
