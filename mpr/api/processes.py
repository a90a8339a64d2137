"""``mpr serve --processes N``: N API processes sharing one listening socket.

The parent binds ``host:port`` once and starts N children, each ``mpr serve``
again with the socket's file descriptor (hidden ``--fd``): each runs uvicorn
on the inherited socket (``uvicorn.Server.serve(sockets=[sock])``, the way
gunicorn's uvicorn worker does it) and the kernel hands every new connection
to whichever process accepts it first. The parent serves nothing: it only
starts, watches and stops the children, so it stays small.

Process 0 is the only one that starts the embedded worker, the native gRPC
server, the poll loop and the watch-folder scan; the others are API-only.
Events of the jobs process 0 runs reach subscribers on the other processes
only through Redis Streams, so N > 1 needs ``MPR_REDIS_URL``.

Lifetime: Ctrl-C / SIGINT and SIGTERM to the parent are passed on to every
child (the same graceful stop as one ``mpr serve``); children still running
30 s later are killed. A child that exits on its own (a crash) stops the
whole serve with exit status 1 and a message naming it: restarting is left
to the service manager (systemd ``Restart=on-failure``, Docker
``restart:``). Each child asks the kernel for SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``), so a killed parent leaves no orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from mpr.errors import ConfigError, MprError
from mpr.settings import Settings

log = logging.getLogger("mpr.api")

STOP_TIMEOUT = 30.0  # seconds the children get to stop before they are killed
_PR_SET_PDEATHSIG = 1


def check_processes(processes: int, settings: Settings) -> None:
    """Refuse N > 1 API processes without MPR_REDIS_URL (raises ConfigError)."""
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {processes}")
    if processes > 1 and not settings.redis_url:
        raise ConfigError(
            f"--processes {processes} (MPR_API_PROCESSES) needs MPR_REDIS_URL: jobs run in one of the API "
            "processes, and their live events (GraphQL subscriptions, gRPC-Web streams) reach the other "
            "processes only through Redis. Set MPR_REDIS_URL, or serve with --processes 1."
        )


def bind(host: str, port: int) -> socket.socket:
    """The listening TCP socket every API process accepts on (inheritable)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise MprError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket a child got from :func:`supervise` as ``fd``, no longer inheritable.

    ``pass_fds`` hands it over inheritable; left so, every program this process starts without
    ``close_fds`` (a plugin's helper, ``os.system``) would hold the port open after MPR stops.
    """
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGTERM this process when ``parent_pid`` (the supervising ``mpr serve``) dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("PR_SET_PDEATHSIG failed (errno %d): this process outlives a killed parent", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before the death signal was set
        raise SystemExit(f"mpr serve: parent process {parent_pid} is gone; stopping")


def supervise(processes: int, host: str, port: int, child_args: list[str]) -> int:
    """Bind, start ``processes`` children (``mpr serve <child_args> --fd …``), wait; the exit status."""
    sock = bind(host, port)
    fd = sock.fileno()
    env = {**os.environ, "MPR_API_PROCESSES": str(processes)}
    base = [
        sys.executable,
        "-c",
        "import sys; from mpr.cli import main; sys.exit(main())",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
    ]
    children: list[subprocess.Popen] = []
    state = {"stopping": False, "signals": 0}

    def forward(signum: int, _frame: object) -> None:
        state["stopping"] = True
        state["signals"] += 1
        if state["signals"] == 1:
            log.info("%s: stopping %d API processes", signal.Signals(signum).name, len(children))
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for index in range(processes):
            argv = [
                *base,
                *child_args,
                "--fd",
                str(fd),
                "--process-index",
                str(index),
                "--parent-pid",
                str(os.getpid()),
            ]
            # its own process group: a terminal's Ctrl-C reaches only the parent, which passes it on once
            children.append(subprocess.Popen(argv, env=env, pass_fds=[fd], process_group=0))
            if state["stopping"]:
                break
        sock.close()  # the children hold it now
        log.info(
            "MPR on http://%s:%d: %d API processes (pids %s; %d also runs the worker, gRPC, poll and scan)",
            host, port, len(children), ", ".join(str(c.pid) for c in children), children[0].pid,
        )  # fmt: skip
        deadline = None
        while True:
            if not state["stopping"]:
                crashed = next(((i, c) for i, c in enumerate(children) if c.poll() is not None), None)
                if crashed is not None:
                    index, child = crashed
                    message = (
                        f"API process {index} (pid {child.pid}) exited with status {child.returncode}; "
                        "stopping the others (restart mpr serve, e.g. systemd Restart=on-failure)"
                    )
                    log.error("%s", message)
                    print(f"Error: {message}", file=sys.stderr, flush=True)
                    status = 1
                    forward(signal.SIGTERM, None)
            if all(c.poll() is not None for c in children):
                break
            if deadline is None and state["stopping"]:
                deadline = time.monotonic() + STOP_TIMEOUT
            if deadline is not None and time.monotonic() > deadline:
                for child in children:
                    if child.poll() is None:
                        log.error("API process pid %d did not stop within %.0f s: killed", child.pid, STOP_TIMEOUT)
                        child.kill()
                deadline = float("inf")
            time.sleep(0.1)
    finally:
        for child in children:  # an exception in the parent: leave nothing behind
            if child.poll() is None:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
    return status
