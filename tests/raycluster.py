"""A real Ray cluster on this machine for the tests, bound to 127.0.0.1 only, and stopped by the processes it started.

``LocalRayCluster`` starts a head node and ``nodes - 1`` more nodes joined to it, each with ``ray start ... --block``
(its own ``--temp-dir``, ``--num-cpus``, a small object store, no dashboard, no usage stats), and gives the
environment a driver needs (``env``) to run ``gigdispatch ... --address 127.0.0.1:PORT`` on it.

Loopback only. Ray 2.60 makes ``--node-ip-address 127.0.0.1`` the machine's outward address
(``resolve_ip_for_localhost``), and then its gRPC servers listen on every interface; only a node whose address stays
``127.0.0.1`` listens on it alone. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps 127.0.0.1 (Ray's one-machine
setting) but also makes ``ray start`` refuse to join a second node, so each node is started through this file
(``python tests/raycluster.py start ...``): Ray's own CLI with the node address fixed to 127.0.0.1 and joining
allowed. ``listening`` reads the sockets the cluster's processes listen on (``/proc``), for the tests to check. The
cluster uses token authentication with a token of its own (``RAY_AUTH_TOKEN_PATH``), never ``~/.ray/auth_token``.

Stopping: ``ray stop`` would stop every Ray process on the machine, someone else's too; ``stop`` sends SIGTERM to the
``ray start --block`` processes this started (each stops the Ray processes of its node), then SIGKILL to their process
groups and to any process left that runs from the cluster's temp folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def loopback_env(token_path: Path, tmp_root: Path | None = None) -> dict[str, str]:
    """The environment of every Ray process of a test (nodes and drivers): node address 127.0.0.1, this token, no
    usage stats, no inherited cluster address; ``tmp_root``: the temp folder of a private ``ray.init`` Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        PYTHONUNBUFFERED="1",
    )
    if tmp_root is not None:
        env["RAY_TMPDIR"] = str(tmp_root)
    return env


def new_token(folder: Path) -> Path:
    path = folder / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every live process below them."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, [])
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


class LocalRayCluster:
    """``nodes`` Ray nodes of ``num_cpus`` CPUs each on 127.0.0.1 (``with LocalRayCluster(...) as c``)."""

    def __init__(self, nodes: int = 2, num_cpus: int = 1, object_store_mb: int = 200, timeout_s: float = 90.0) -> None:
        self.n_nodes, self.num_cpus, self.object_store_mb, self.timeout_s = nodes, num_cpus, object_store_mb, timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="gdray-", dir="/tmp"))  # short: Ray's socket paths must fit
        self.token = new_token(self.root)
        self.env = loopback_env(self.token)
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    # ------------------------------------------------------------------------------------------ start
    def _start_node(self, k: int, head: bool) -> None:
        args = [sys.executable, __file__, "start", "--block", "--node-ip-address", LOOPBACK]
        args += ["--num-cpus", str(self.num_cpus), "--object-store-memory", str(self.object_store_mb * 2**20)]
        args += ["--disable-usage-stats", "--temp-dir", str(self.root / f"node{k}")]
        args += ["--dashboard-agent-listen-port", str(free_port())]
        if head:
            args += ["--head", "--port", str(self.port), "--include-dashboard=false"]
            args += ["--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", self.address]
        log = open(self.root / f"node{k}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + self.timeout_s
        while b"Ray runtime started" not in (self.root / f"node{k}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node {k} did not start:\n{self.log(k)}")
            time.sleep(0.2)

    def start(self) -> LocalRayCluster:
        try:
            for k in range(self.n_nodes):
                self._start_node(k, head=k == 0)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, k: int) -> str:
        path = self.root / f"node{k}.log"
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""

    # ------------------------------------------------------------------------------------------ look
    def processes(self) -> list[int]:
        """Every live process of the cluster: a node's ``ray start`` and every process below it (raylet, workers),
        and any other in a node's process group or running from the cluster's temp folder."""
        starts = {p.pid for p in self.procs if p.poll() is None}
        groups = {p.pid for p in self.procs}
        root = str(self.root)
        tree = descendants(starts) if starts else set()
        return sorted(
            pid
            for pid in _pids()
            if pid in tree or ((st := _stat(pid)) is not None and st[1] in groups) or root in _cmdline(pid)
        )

    def listening(self, drivers: set[int] = frozenset()) -> set[str]:  # type: ignore[assignment]
        """``HOST:PORT`` of every TCP socket the cluster's processes (and the ``drivers`` and their children) listen
        on; IPv4-mapped IPv6 addresses as IPv4."""
        inodes: set[str] = set()
        for pid in set(self.processes()) | descendants(set(drivers)):
            fd_dir = Path(f"/proc/{pid}/fd")
            try:
                fds = list(fd_dir.iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        out: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                f = row.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                    out.add(_address(f[1]))
        return out

    # ------------------------------------------------------------------------------------------ stop
    def stop(self) -> list[int]:
        """Stop the nodes this started (the others first, the head last); returns the pids that had to be killed."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        killed = []
        for _ in range(3):
            left = self.processes()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        for proc in self.procs:
            if proc.poll() is None:
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        return killed

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------- comparing a sweep's results
TIMING = ("wall_seconds", "decision_ms")  # columns that measure this run's wall time: they differ between runs
FILES = ("episodes.csv", "summary.csv", "hourly.csv", "comparisons.csv")
MDRP_MATCH = "0r50t100s1p1*"  # two small MDRP instances (242 orders each)


def figures(out: Path, name: str) -> list[dict[str, str]]:
    """The rows of a results CSV without the wall-time columns."""
    with (out / name).open() as f:
        return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in csv.DictReader(f)]


def journal_lines(out: Path) -> list[dict]:
    from gigdispatch.training.evaluate import JOURNAL

    return [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]


def same_episode(a: dict, b: dict) -> bool:
    """Two journal results of one episode agree on every figure (KPIs but the wall time, hourly counts, bounds,
    the number of decisions)."""
    ka = {k: v for k, v in a["kpis"].items() if k != "wall_seconds"}
    kb = {k: v for k, v in b["kpis"].items() if k != "wall_seconds"}
    if ka.keys() != kb.keys():
        return False

    def equal(x: Any, y: Any) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return (
        all(equal(ka[k], kb[k]) for k in ka)
        and a["hourly"] == b["hourly"]
        and a["bounds"] == b["bounds"]
        and len(a["latency_ms"]) == len(b["latency_ms"])
    )


def _address(hex_addr: str) -> str:
    """``/proc/net/tcp*`` local address -> ``HOST:PORT``."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        ip6 = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, ip6).removeprefix("::ffff:")
    return f"{ip}:{int(port, 16)}"


def _launch(argv: list[str]) -> Any:
    """``ray ARGV`` with this node's address kept at 127.0.0.1 and a second node allowed to join (see the top)."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray.scripts.scripts import main

    ray_constants.ENABLE_RAY_CLUSTER = True  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would refuse a joining node
    services.get_node_ip_address = lambda address=None: LOOPBACK
    sys.argv = ["ray", *argv]
    return main()


if __name__ == "__main__":
    _launch(sys.argv[1:])
