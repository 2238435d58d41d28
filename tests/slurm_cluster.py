"""A throw-away single-node SLURM cluster on localhost, for the tests (and by hand).

    python tests/slurm_cluster.py /tmp/cluster     # start one, print `export SLURM_CONF=...`; Ctrl-C or kill stops it

`install()` puts Debian's slurm-wlm and munge on the machine when slurmctld is absent (apt-get, as
root). `SlurmCluster(folder)` writes its own munge key and a slurm.conf (one node with this machine's
CPUs and memory, linuxproc process tracking, no task plugin, cons_tres, SlurmUser root, free
localhost ports), starts munged, slurmctld and slurmd in the foreground as its own children, waits
until `sinfo` shows the node idle, and stops exactly those processes by pid. Clients (sbatch, squeue,
scancel, submitit) find it through the SLURM_CONF in `cluster.env`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch")


def missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]


def install() -> str | None:
    """Install slurm-wlm and munge when absent; returns why not, or None when they are there."""
    if not missing():
        return None
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine to install slurm-wlm and munge"
    if os.geteuid() != 0:
        return "installing slurm-wlm and munge needs root (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None if not missing() else f"still missing after apt-get: {', '.join(missing())}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(256, int(kb / 1024 * 0.8))


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    def __init__(self, folder: str, cpus: int | None = None):
        self.folder = os.path.abspath(folder)
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: list[subprocess.Popen] = []
        self.conf = os.path.join(self.folder, "slurm.conf")
        self.socket = os.path.join(self.folder, "munge", "munge.socket")
        self.env = {**os.environ, "SLURM_CONF": self.conf}

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def write_config(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            os.makedirs(self.path(d), exist_ok=True)
        os.chmod(self.path("munge"), 0o700)
        key = self.path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        lines = [
            "ClusterName=testcluster", "SlurmctldHost=localhost(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", f"AuthInfo=socket={self.socket}", "CredType=cred/munge",
            f"StateSaveLocation={self.path('state')}", f"SlurmdSpoolDir={self.path('spool')}",
            f"SlurmctldPidFile={self.path('slurmctld.pid')}", f"SlurmdPidFile={self.path('slurmd.pid')}",
            f"SlurmctldLogFile={self.path('log', 'slurmctld.log')}", f"SlurmdLogFile={self.path('log', 'slurmd.log')}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "ReturnToService=2", "JobRequeue=1", "SlurmdTimeout=60",
            "MinJobAge=600", "KillWait=5", "SchedulerParameters=sched_interval=1,bf_interval=1",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def _spawn(self, argv: list[str], log: str) -> None:
        out = open(self.path("log", log), "ab")  # noqa: SIM115 (kept open for the daemon's life)
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.write_config()
        self._spawn([_binary("munged"), "-F", "--force", f"--socket={self.socket}",
                     f"--key-file={self.path('munge', 'munge.key')}", f"--pid-file={self.path('munge', 'munged.pid')}",
                     f"--log-file={self.path('log', 'munged.log')}", f"--seed-file={self.path('munge', 'seed')}"],
                    "munged.out")
        self._wait(lambda: os.path.exists(self.socket), 15, "munged")
        self._spawn([_binary("slurmctld"), "-D", "-i", "-f", self.conf], "slurmctld.out")
        self._spawn([_binary("slurmd"), "-D", "-N", "localhost", "-f", self.conf], "slurmd.out")
        self._wait(self.node_idle, timeout, "the node to be idle")
        return self

    def node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return done.returncode == 0 and done.stdout.strip().rstrip("*") == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if ready():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        logs = {n: self._tail(n) for n in ("slurmctld.log", "slurmd.log", "munged.log")}
        self.stop()
        raise RuntimeError(f"SLURM test cluster: gave up waiting for {what}; logs:\n"
                           + "\n".join(f"{n}: {t}" for n, t in logs.items()))

    def _tail(self, name: str) -> str:
        try:
            with open(self.path("log", name), encoding="utf-8", errors="replace") as f:
                return " | ".join(f.read().splitlines()[-6:])
        except OSError:
            return "(none)"

    def stop(self) -> None:
        """Stop the daemons this object started (SIGTERM, then SIGKILL), newest first."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []


if __name__ == "__main__":
    reason = install()
    if reason:
        sys.exit(f"cannot start a SLURM cluster: {reason}")
    cluster = SlurmCluster(sys.argv[1] if len(sys.argv) > 1 else "slurm-cluster").start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID stops the daemons too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.stop()
