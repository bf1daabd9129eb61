"""Running the sandbox: in the foreground for the CLI, or in a background thread for tests and demos.

- `serve` runs one sandbox on the current event loop until it is cancelled or the process gets
  SIGINT/SIGTERM, and logs ``sandbox_listening url=…`` once the socket is bound.
- `run_sandbox` is what ``inmobi-sync sandbox [--host H] [--port P]`` calls: it blocks in `serve`
  and turns the outcome into an exit code (0 on a signal, 1 when the port cannot be bound).
- `SandboxThread` is a context manager that starts a sandbox on 127.0.0.1 and a free port in a
  thread with its own event loop. ``__enter__`` returns once the site is listening (a
  ``threading.Event`` set after ``site.start()``, never a sleep); ``__exit__`` stops the loop and
  joins the thread. The live `SandboxContext` is reachable for inspection, and `call` runs a
  function on the sandbox's own loop, which is the safe way to read or change it from a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import structlog
from aiohttp import web

from worker.sandbox.app import create_app
from worker.sandbox.config import SandboxConfig
from worker.sandbox.context import SANDBOX, SandboxContext
from worker.sandbox.state import SandboxState

__all__ = ["SandboxThread", "run_sandbox", "serve"]

T = TypeVar("T")
_log = structlog.get_logger("worker.sandbox")
# Waiting requests are cancelled on shutdown; this only bounds a client that stalls mid-body.
_SHUTDOWN_TIMEOUT = 5.0


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _on_signals(callback: Callable[[], None]) -> list[signal.Signals]:
    """Install handlers for SIGINT/SIGTERM where the loop allows it (main thread, Unix)."""
    loop, installed = asyncio.get_running_loop(), []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    return installed


async def serve(config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> None:
    """Serve one sandbox until cancelled or SIGINT/SIGTERM; raises OSError if it cannot bind."""
    runner = await _start(create_app(config, clock=clock), config.host, config.port)
    stop = asyncio.Event()
    installed = _on_signals(stop.set)
    try:
        _log.info("sandbox_listening", url=_url(runner))
        await stop.wait()
        _log.info("sandbox_stopping")
    finally:
        for sig in installed:
            asyncio.get_running_loop().remove_signal_handler(sig)
        await runner.cleanup()


def run_sandbox(host: str, port: int, *, config: SandboxConfig | None = None) -> int:
    """Block serving a sandbox on host:port; the exit code for the CLI."""
    base = config or SandboxConfig()
    try:
        asyncio.run(serve(base.model_copy(update={"host": host, "port": port})))
    except OSError as exc:
        _log.error("sandbox_failed", host=host, port=port, error=str(exc))
        return 1
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return 0
    return 0


class SandboxThread:
    """A sandbox on 127.0.0.1:<free port> in a background thread; use as a context manager."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        start_timeout: float = 10.0,
    ) -> None:
        base = config or SandboxConfig()
        self.config = base.model_copy(update={"host": "127.0.0.1", "port": 0})
        self._clock = clock
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._app: web.Application | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> SandboxThread:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            self.stop()
            raise TimeoutError(f"sandbox did not start within {self._start_timeout} s")
        if self._error is not None:
            self.stop()
            raise RuntimeError("sandbox failed to start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"sandbox thread did not stop within {timeout} s")
        self._thread = None

    @property
    def context(self) -> SandboxContext:
        if self._app is None:
            raise RuntimeError("sandbox is not running")
        return self._app[SANDBOX]

    @property
    def state(self) -> SandboxState:
        """The live state (read it through `call` while requests may be in flight)."""
        return self.context.state

    def call(self, fn: Callable[[SandboxContext], T], timeout: float = 5.0) -> T:
        """Run ``fn(context)`` on the sandbox's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("sandbox is not running")
        context = self.context

        async def run() -> T:
            return fn(context)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /_sandbox/state`` answers, read safely on the sandbox's loop."""
        return self.call(lambda c: c.snapshot())

    def wait_until(self, predicate: Callable[[SandboxContext], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate(context)`` on the sandbox loop until true; TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while not self.call(predicate):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"sandbox condition not met within {timeout} s")
            time.sleep(0.005)  # poll interval, not a wait for an outcome

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._app = create_app(self.config, clock=self._clock)
        runner = await _start(self._app, self.config.host, self.config.port)
        try:
            self.url = _url(runner)
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
