"""A private `redis-server` on a free loopback port, for tests that stop or pause Redis.

The shared Redis (127.0.0.1:6379) serves every other test run: it is never stopped, paused or
flushed. This one has no persistence, so a restart comes back empty (groups and all), as a
production Redis without persistence would.

    with RedisServer() as redis:          # started; always resumed and killed on exit
        redis.url                         # redis://127.0.0.1:<port>/0
        redis.stop(); redis.start()       # SIGTERM, then a new process on the same port
        redis.pause(); redis.resume()     # SIGSTOP / SIGCONT: connections open, nothing answers
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 10) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers():
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout}s")
            time.sleep(0.02)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, as an operator's restart does; killed if it has not exited within 5 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
