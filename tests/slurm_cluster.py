"""A throw-away single-node SLURM cluster on localhost, for tests of the SLURM profile.

Debian's ``slurmctld slurmd slurm-client munge`` packages (Slurm 22.05) are installed with apt when
missing. :class:`LocalSlurm` writes ``/etc/slurm/slurm.conf`` and ``gres.conf`` (the SLURM executor
plugin's job step drops ``SLURM_CONF``, so the configuration has to live at the default path),
starts munged (as the munge user), slurmctld and slurmd in the foreground as child processes, and
waits until ``sinfo`` shows the node idle. :meth:`LocalSlurm.stop` cancels the cluster's jobs,
stops exactly the daemons it started (by process id), removes the configuration and the state
directory.

The node is a shape, not the machine: ``SlurmdParameters=config_overrides`` lets it declare more
CPUs and memory than the host has (nothing is enforced: ``task/none``, ``proctrack/linuxproc``)
and four fake GPUs (``gres.conf`` with ``AutoDetect=off`` and device files that are /dev/null),
so a profile written for a real cluster can be submitted unchanged apart from its partition names.
Two partitions, ``cpu`` (the default) and ``gpu``, both hold the node.

There is no slurmdbd: ``sacct`` fails, so the executor plugin must be told
``--slurm-status-command squeue``, and ``MinJobAge`` (how long finished jobs stay visible to
``squeue`` and ``scontrol``) is 300 s, more than three times the plugin's first status check.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sinfo")
CONF_DIR = Path("/etc/slurm")
MARKER = "# written by brainfuse tests/slurm_cluster.py"
LOCK_FILE = Path("/tmp/brainfuse-slurm-test.lock")
MUNGE_RUN_DIR = Path("/run/munge")
CLUSTER_NAME = "brainfuse-test"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be set up here for a reason that is not a bug (the test is skipped)."""


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def installed() -> bool:
    """Whether the SLURM daemons, the client commands and munged are on this machine."""
    return all(Path(p).exists() for p in DAEMONS)


def ensure_installed(timeout: float = 300) -> float:
    """Install the Debian SLURM and munge packages when missing; returns the seconds it took.

    Raises :class:`ClusterUnavailable` when apt cannot be used (not root, no apt-get) and
    ``RuntimeError`` when apt is there but the installation fails.
    """
    if installed():
        return 0.0
    if os.geteuid() != 0:
        raise ClusterUnavailable("SLURM is not installed and installing it needs root")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable("SLURM is not installed and there is no apt-get to install it")
    start = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = _run(install, timeout, env=env)
    if result.returncode != 0:  # stale package lists: refresh once and retry
        _run(["apt-get", "update", "-q"], timeout, env=env)
        result = _run(install, timeout, env=env)
    if result.returncode != 0 or not installed():
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL, one process we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass
class LocalSlurm:
    """A single-node cluster: one node ``localhost`` in partitions ``cpu`` (default) and ``gpu``.

    Use as a context manager, or call :meth:`start` and (always) :meth:`stop`.
    """

    cpus: int = 16
    memory_mb: int = 256000
    gpus: int = 4
    min_job_age: int = 300
    partitions: tuple[str, ...] = ("cpu", "gpu")
    state_dir: Path | None = None
    start_seconds: float = field(default=0.0, init=False)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)
    _lock: object = field(default=None, init=False, repr=False)
    _written: list[Path] = field(default_factory=list, init=False, repr=False)
    _own_state_dir: bool = field(default=False, init=False, repr=False)
    _made_dirs: list[Path] = field(default_factory=list, init=False, repr=False)

    # -- configuration ------------------------------------------------------------------------

    def slurm_conf(self) -> str:
        assert self.state_dir is not None
        s = self.state_dir
        host = socket.gethostname().split(".")[0]
        parts = [
            f"PartitionName={name} Nodes=localhost MaxTime=INFINITE State=UP"
            + (" Default=YES" if i == 0 else "")
            for i, name in enumerate(self.partitions)
        ]
        return "\n".join(
            [
                MARKER,
                f"ClusterName={CLUSTER_NAME}",
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"StateSaveLocation={s / 'ctld'}",
                f"SlurmdSpoolDir={s / 'slurmd'}",
                f"SlurmctldPidFile={s / 'slurmctld.pid'}",
                f"SlurmdPidFile={s / 'slurmd.pid'}",
                f"SlurmctldLogFile={s / 'slurmctld.log'}",
                f"SlurmdLogFile={s / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "DefMemPerCPU=500",  # without a default, a job without --mem takes the whole node
                "GresTypes=gpu",
                "SlurmdParameters=config_overrides",
                "ReturnToService=2",
                f"MinJobAge={self.min_job_age}",
                "SchedulerType=sched/backfill",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "MailProg=/bin/true",
                "KillWait=5",
                "InactiveLimit=0",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=60",
                f"NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN",
                *parts,
                "",
            ]
        )

    def gres_conf(self) -> str:
        """The fake GPUs: device files in the state directory that are /dev/null (1:3) stand in for
        /dev/nvidiaN."""
        assert self.state_dir is not None
        files = self.state_dir / "gpu"
        index = f"[0-{self.gpus - 1}]" if self.gpus > 1 else "0"
        return "\n".join(
            [MARKER, "AutoDetect=off", f"NodeName=localhost Name=gpu File={files}{index}", ""]
        )

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 90) -> float:
        """Write the configuration, start the daemons, wait for the node; returns the seconds."""
        if not installed():
            raise ClusterUnavailable("SLURM is not installed (call ensure_installed first)")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmctld/slurmd/munged needs root")
        t0 = time.monotonic()
        self._acquire_lock()
        try:
            self._write_configs()
            self._start_munged()
            self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"])
            self._wait(lambda: self._scontrol_ping(), timeout, "slurmctld to answer")
            self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-N", "localhost"])
            self._wait(self._node_idle, timeout, "the node to be idle in sinfo")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def stop(self) -> None:
        """Cancel every job of this cluster, stop the daemons we started, remove all state."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                _run(["scancel", "--user", pwd.getpwuid(os.getuid()).pw_name], 15)
                self._wait(lambda: not self._running_jobs(), 20, "jobs to end", raise_=False)
        # A job's processes can outlive its cancellation (Snakemake ignores SIGTERM, and
        # proctrack/linuxproc loses processes once slurmstepd is gone): end them by process id.
        for pid in _job_processes(CLUSTER_NAME):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                with contextlib.suppress(Exception):
                    _stop_process(proc)
        for path in self._written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._written.clear()
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):
                shutil.rmtree(d)
        self._made_dirs.clear()
        if self._own_state_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None
            self._own_state_dir = False
        if self._lock is not None:
            with contextlib.suppress(Exception):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
            self._lock = None

    # -- queries ------------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge), as key=value dicts."""
        result = _run(["scontrol", "show", "job", "--oneliner"], 30)
        if result.returncode != 0 or "No jobs in the system" in result.stdout:
            return []
        return [_parse_oneliner(line) for line in result.stdout.splitlines() if line.strip()]

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the daemon logs, for failure messages."""
        if self.state_dir is None:
            return ""
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.state_dir / name
            if path.exists():
                out.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    # -- internals ----------------------------------------------------------------------------

    def _acquire_lock(self, timeout: float = 30) -> None:
        """One local cluster per machine: /etc/slurm is shared."""
        self._lock = open(LOCK_FILE, "w")  # noqa: SIM115 (held until stop)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise ClusterUnavailable(
                        f"another local SLURM test cluster holds {LOCK_FILE}"
                    ) from None
                time.sleep(0.5)

    def _write_configs(self) -> None:
        for name in ("slurm.conf", "gres.conf"):
            path = CONF_DIR / name
            if path.exists() and MARKER not in path.read_text(errors="replace"):
                raise ClusterUnavailable(
                    f"{path} exists and was not written by these tests: this machine has a SLURM "
                    "setup of its own, which the test will not overwrite"
                )
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="brainfuse-slurm-"))
            self._own_state_dir = True
        for sub in ("ctld", "slurmd"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(self.gpus):
            device = self.state_dir / f"gpu{i}"
            if not device.exists():
                os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in (("slurm.conf", self.slurm_conf()), ("gres.conf", self.gres_conf())):
            path = CONF_DIR / name
            path.write_text(text)
            self._written.append(path)

    def _start_munged(self) -> None:
        """Start munged as the munge user, unless a munged already answers on its socket."""
        if self._munge_works():
            return
        munge = pwd.getpwnam("munge")
        for d in (MUNGE_RUN_DIR, Path("/var/lib/munge"), Path("/var/log/munge")):
            if not d.exists():
                d.mkdir(parents=True)
                self._made_dirs.append(d)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        MUNGE_RUN_DIR.chmod(0o755)
        if not Path("/etc/munge/munge.key").exists():
            _run(["runuser", "-u", "munge", "--", "mungekey", "--create"], 30)
        assert self.state_dir is not None
        log = self.state_dir / "munged.log"
        log.touch()
        os.chown(log, munge.pw_uid, munge.pw_gid)
        self._procs["munged"] = subprocess.Popen(
            ["/usr/sbin/munged", "--foreground", "--force", f"--log-file={log}"],
            user=munge.pw_uid,
            group=munge.pw_gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait(self._munge_works, 20, "munged to answer")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        assert self.state_dir is not None
        out = open(self.state_dir / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        self._procs[name] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keep the terminal's Ctrl-C away from the daemons
        )
        out.close()

    def _wait(self, check, timeout: float, what: str, raise_: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None and raise_:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n"
                        + self.log_tail()
                    )
            if check():
                return True
            time.sleep(0.25)
        if raise_:
            raise RuntimeError(
                f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tail()}"
            )
        return False

    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = _run(["munge", "-n"], 10)
            return cred.returncode == 0 and _run(["unmunge"], 10, input=cred.stdout).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def _scontrol_ping() -> bool:
        try:
            result = _run(["scontrol", "ping"], 10)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 and "UP" in result.stdout

    @staticmethod
    def _node_idle() -> bool:
        try:
            result = _run(["sinfo", "--noheader", "--Node", "--format=%N %t"], 10)
        except subprocess.TimeoutExpired:
            return False
        states = {line.split()[1] for line in result.stdout.splitlines() if line.strip()}
        return result.returncode == 0 and states == {"idle"}

    @staticmethod
    def _running_jobs() -> bool:
        result = _run(["squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING"], 10)
        return bool(result.stdout.strip())


def _job_processes(cluster: str) -> list[int]:
    """Ids of processes started by jobs of ``cluster`` (SLURM_CLUSTER_NAME in their environment).

    Only jobs of the local test cluster carry its name; this process is never included.
    """
    marker = f"SLURM_CLUSTER_NAME={cluster}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def _parse_oneliner(line: str) -> dict[str, str]:
    """``Key=Value Key=Value ...`` from ``scontrol --oneliner`` (values hold no spaces, except
    the few that may, which end up joined to their key)."""
    fields: dict[str, str] = {}
    key = None
    for token in line.split():
        if "=" in token:
            key, value = token.split("=", 1)
            fields[key] = value
        elif key is not None:
            fields[key] += f" {token}"
    return fields
