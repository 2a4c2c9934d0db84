"""Pipelines started as `python <script> <args>` starts them, without paying the imports each time.

A command-line test of droptune spends most of its time importing torch, Lightning and MLflow:
about 8 s of CPU per process on a 2-core machine, where the trials it runs take one or two. So
the tests start their pipelines from multiprocessing's fork server with those libraries preloaded:
each one is a real process of its own (its pid, its signals, its exit status, its stdout and
stderr), forked after the imports, that runs the script as `__main__` with its own argv,
environment, working directory and `sys.path`, and runs the interpreter's exit handlers at the
end. What it leaves out is the interpreter's own start, which the tests of `make tune`, `make
sites` and SLURM still pay by exec'ing Python for real.
"""

from __future__ import annotations

import atexit
import functools
import json
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# droptune's entry modules, and with them torch, Lightning, MLflow, Optuna and Hydra
PRELOAD = ["droptune.study.loop", "droptune.train", "droptune.bench", "droptune.report.run"]


@dataclass(frozen=True)
class _Start:
    """What the child needs to set itself up as `python <argv>` in `cwd` with `env`."""

    argv: tuple[str, ...]  # (script, *args) or ("-c", code, *args), as after `python`
    env: dict[str, str]
    cwd: str
    stdout: str
    stderr: str
    sys_path: tuple[str, ...]  # a fresh interpreter's, after the script's folder


def _run_as_main(start: _Start) -> None:
    """The child: the script's process as the interpreter would set it up, then the script."""
    os.environ.clear()
    os.environ.update(start.env)
    os.chdir(start.cwd)
    for fd, path in ((1, start.stdout), (2, start.stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(opened, fd)
        os.close(opened)
    if "OMP_NUM_THREADS" in start.env:  # torch reads it at its import, before the fork
        import torch

        torch.set_num_threads(int(start.env["OMP_NUM_THREADS"]))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    inline = start.argv[0] == "-c"
    script_dir = "" if inline else str(Path(start.argv[0]).resolve().parent)
    sys.path[:] = [script_dir, *start.sys_path]
    sys.argv = ["-c", *start.argv[2:]] if inline else list(start.argv)
    try:
        if inline:
            exec(compile(start.argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            runpy.run_path(start.argv[0], run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends a child with os._exit, which skips them


@functools.cache
def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@functools.cache
def _fresh_sys_path() -> tuple[str, ...]:
    found = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    return tuple(json.loads(found.stdout))


class Launched:
    """One started pipeline, with the part of subprocess.Popen's interface the tests use."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: Path,
        stderr: Path | None = None,
    ) -> None:
        self.args = list(argv)
        start = _Start(
            argv=tuple(str(a) for a in argv),
            env=dict(os.environ if env is None else env),
            cwd=str(cwd or os.getcwd()),
            stdout=str(stdout),
            stderr=str(stderr or stdout),
            sys_path=_fresh_sys_path(),
        )
        self._process = _context().Process(target=_run_as_main, args=(start,))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """subprocess.run(argv, capture_output=True, text=True) for a pipeline, argv after `python`."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        process = Launched(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        read = [path.read_text() if path.exists() else "" for path in (out, err)]
        return subprocess.CompletedProcess(list(argv), code, *read)
