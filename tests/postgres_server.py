"""A real PostgreSQL server for tests: a fresh cluster in a tmp dir on a free loopback port.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it). PostgreSQL
refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
and its commands run through ``runuser``. Authentication is ``trust`` on loopback only;
``fsync`` is off: the tests kill processes that *use* the server, never the server itself.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg

from tests.helpers import free_port

DATABASE = "kitty"


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``postgres``, or ``None`` when not installed."""
    found = shutil.which("pg_config")
    if found:
        done = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(done.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """One PostgreSQL cluster, started on a free port, with the database ``kitty``.

    Args:
        directory: Where the cluster's data and socket live (removed by the caller).
    """

    def __init__(self, directory: Path) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError(
                "PostgreSQL is not installed: run `apt-get install postgresql` (.ci/run does)"
            )
        self.bin = binaries
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = DATABASE) -> str:
        """A ``postgresql://`` URL of this server (user ``postgres``, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database on this server (one per test keeps tests apart)."""
        name = f"kitty_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _as_owner(self, command: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def start(self) -> None:
        """Create the cluster, start the server and create the database (60 s at most)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres"]
        initdb += ["--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
        subprocess.run(
            self._as_owner(initdb),
            check=True,
            capture_output=True,
        )
        log = self.directory / "server.log"
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.directory}",
        ]
        command += ["-c", "fsync=off", "-c", "max_connections=200"]
        with log.open("wb") as sink:
            self._process = subprocess.Popen(
                self._as_owner(command), stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
                    connection.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not start on port {self.port}: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait for it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
