"""``python -m tests.chaos [--tier ci|full] [--only NAME ...]``: run the scenarios, print the table.

Starts one embedded broker for the run and a fresh sandbox per scenario; worker logs are kept
under the printed directory. Exits 1 if any scenario failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from tests.chaos.report import Result, table
from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import scenarios
from worker.embedded import EmbeddedBroker
from worker.observability import configure_logging
from worker.sandbox.server import SandboxThread

DEADLINES = {"ci": 180.0, "full": 900.0}  # for commits to reach the end after the heal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--tier", choices=("ci", "full"), default="full")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")  # the in-process sandbox logs every request
    # a worker killed mid-upload leaves a request half-read: aiohttp logs a traceback for it
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    chosen = [s for s in scenarios(args.tier) if not args.only or s.name in args.only]
    logs = Path(tempfile.mkdtemp(prefix=f"chaos-{args.tier}-"))
    print(f"tier {args.tier}: {len(chosen)} scenarios, worker logs under {logs}", flush=True)
    results: list[Result] = []
    with EmbeddedBroker() as broker:
        for scenario in chosen:
            log_dir = logs / scenario.name
            log_dir.mkdir()
            with SandboxThread() as sandbox:
                result = run_scenario(
                    scenario, broker.bootstrap, sandbox.url, log_dir, deadline=DEADLINES[args.tier]
                )
            results.append(result)
            print(f"{result.row()}  ({result.seconds:.0f} s)", flush=True)
            for line in result.evidence + result.problems:
                print(f"    {line}", flush=True)
    print()
    print(table(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
