"""Real servers for the cluster tests: a throwaway PostgreSQL and an MLflow server, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """initdb + pg_ctl in a temp dir, as a non-root user (PostgreSQL refuses root), trust auth."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="droptune-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "droptune",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        return self

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "droptune",
            name,
        )
        return f"postgresql+psycopg://droptune:secret@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class MlflowServer:
    """`mlflow server` with a PostgreSQL backend store and a temp artifact folder."""

    def __init__(self, backend_uri: str, artifacts: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = artifacts.parent / "mlflow-server.log"
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"), "server",
                "--backend-store-uri", backend_uri,
                "--artifacts-destination", str(artifacts),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # as make mlflow-server
        )  # fmt: skip

    def wait(self, timeout: float = 120) -> MlflowServer:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def slurm_missing() -> str | None:
    """Why a local SLURM cannot be started here, or None."""
    for tool in ("slurmctld", "slurmd", "sbatch", "munged"):
        if shutil.which(tool) is None:
            return f"{tool} not found: `make install` installs Debian's slurm-wlm and munge"
    if os.geteuid() != 0:
        return "the single-node SLURM of the tests runs its daemons as root"
    return None


class Slurm:
    """A single-node SLURM on this machine: munged on a private socket, slurmctld and slurmd."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="droptune-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def _daemon(self, *command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=60, env=self.env)

    def start(self) -> Slurm:
        d, host = self.dir, socket.gethostname()
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._daemon(
            "munged", "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
            f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munge.seed",
        )  # fmt: skip
        (d / "state").mkdir()
        (d / "spool").mkdir()
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=droptune-test", f"SlurmctldHost={host}", "SlurmUser=root",
                    "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
                    f"AuthInfo=socket={d}/munge.sock", "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
                    "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
                    f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
                    f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
                    f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
                    f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
                    "ReturnToService=2", "MpiDefault=none",
                    f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
                    f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )  # fmt: skip
        self._daemon("slurmctld", "-f", str(self.conf))
        self._daemon("slurmd", "-f", str(self.conf))
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env
            )
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"slurmd never became idle: {(d / 'slurmd.log').read_text()[-1500:]}")

    def sbatch(self, *args: str, env: dict[str, str]) -> str:
        done = subprocess.run(
            ["sbatch", "--parsable", *args],
            capture_output=True,
            text=True,
            check=True,
            env={**env, **self.env},
        )
        return done.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            queued = subprocess.run(
                ["squeue", "-h", "-j", job_id], capture_output=True, text=True, env=self.env
            )
            if not queued.stdout.strip():
                return
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still queued after {timeout}s")

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], capture_output=True, env=self.env, timeout=30)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            path = self.dir / pid_file
            if path.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(path.read_text().strip()), signal.SIGTERM)
        time.sleep(1)
        shutil.rmtree(self.dir, ignore_errors=True)
