"""The local InMobi simulator ("sandbox"): an aiohttp server that implements CONTRACT section 5.

Modules, from the pure core outwards:

- `csvfile`: checks one gzip CSV upload (pure)
- `sessions`, `state`: accounts, sessions, segments, members, upload log, counters (pure)
- `faults`: the fault configuration model and the per-request fault decision (pure)
- `holds`: held uploads and deliberately hanging requests (asyncio)
- `registry`: a minimal Confluent Schema Registry under ``/registry``
- `api`, `admin`, `app`: the routes and the application
- `server`: `serve`, `run_sandbox` for the CLI, `SandboxThread` for tests and demos
"""

from worker.sandbox.app import create_app
from worker.sandbox.clock import ManualClock
from worker.sandbox.config import SandboxConfig
from worker.sandbox.context import SandboxContext
from worker.sandbox.faults import FaultConfig, FaultMatch, FaultRule
from worker.sandbox.server import SandboxThread, run_sandbox, serve
from worker.sandbox.state import SandboxState, Segment

__all__ = [
    "FaultConfig",
    "FaultMatch",
    "FaultRule",
    "ManualClock",
    "SandboxConfig",
    "SandboxContext",
    "SandboxState",
    "SandboxThread",
    "Segment",
    "create_app",
    "run_sandbox",
    "serve",
]
