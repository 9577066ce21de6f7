"""A throwaway real PostgreSQL server for tests: a fresh cluster (initdb) in a
temporary folder, on 127.0.0.1 and a free port, one database in it, stopped and removed
afterwards. Run as root, the server runs as the `postgres` system user (PostgreSQL
refuses to run as root). Standard library only; MLflow reaches it through `uri`, which
needs a PostgreSQL driver for SQLAlchemy (psycopg 3, or psycopg2) in this environment."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

# the programs used, all from the same PostgreSQL installation
PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
# settings for a disposable cluster: no durability, nothing but the loopback interface
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
}


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres and createdb: $POSTGRES_BIN_DIR when set,
    else Debian's newest /usr/lib/postgresql/<version>/bin, else pg_config's or PATH's."""
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BIN_DIR"):
        candidates.append(Path(os.environ["POSTGRES_BIN_DIR"]))
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.replace(".", "").isdigit()]
    candidates += sorted(debian, key=lambda p: tuple(int(x) for x in p.parent.name.split(".")), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in PROGRAMS):
            return folder
    return None


def driver() -> str | None:
    """The SQLAlchemy PostgreSQL driver installed here: 'psycopg' (3) first, then 'psycopg2'."""
    for name in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def run_as_user() -> str | None:
    """The user the server runs as: `postgres` when this process is root, else None (this user)."""
    return "postgres" if os.geteuid() == 0 else None


def available() -> str | None:
    """None when a PostgreSQL server can be started here and SQLAlchemy (MLflow) can reach it, else why not (for pytest.skip)."""
    reason = server_unavailable()
    if reason is None and driver() is None:
        reason = "no PostgreSQL driver for SQLAlchemy (pip install 'psycopg[binary]' or psycopg2-binary)"
    return reason


def server_unavailable() -> str | None:
    """None when a PostgreSQL server can be started here, else why not."""
    if os.name != "posix":
        return "PostgreSQL test server needs a POSIX system"
    if find_bin_dir() is None:
        return f"PostgreSQL server programs ({', '.join(PROGRAMS)}) not found under /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)"
    user = run_as_user()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"running as root and there is no '{user}' user to run PostgreSQL as (PostgreSQL refuses to run as root)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unreachable_folder(path: Path, user: str) -> Path | None:
    """The first folder above path (or path itself) that `user` cannot enter, if any: e.g. pytest's
    0700 /tmp/pytest-of-root when the server runs as `postgres`."""
    entry = pwd.getpwnam(user)
    for folder in [*reversed(path.parents), path]:
        st = folder.stat()
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


class PostgresServer:
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port> with one database, `dbname`;
    start() or entering a with block starts it, stop() or leaving the block stops it
    (pg_ctl stop -m fast) and removes its folder. `uri` is the SQLAlchemy URI for MLflow,
    e.g. postgresql+psycopg://postgres:<password>@127.0.0.1:<port>/mlflow.

    TCP connections need the (random) password in `uri`; the cluster's Unix socket (no
    password) lives in its own folder, `root`. base_dir: where the temporary folder goes (default: the system's
    temporary folder; the `postgres` user must be able to reach it when run as root)."""

    def __init__(self, dbname: str = "mlflow", port: int | None = None, base_dir: Path | str | None = None, user: str | None = None):
        self.dbname = dbname
        self.requested_port = port
        self.base_dir = base_dir
        self.user = user if user is not None else run_as_user()  # the OS user the server runs as (None: this process's)
        self.db_user = "postgres"  # the database superuser in the URI
        self.password = secrets.token_hex(16)
        self.port: int | None = None
        self.root: Path | None = None  # the temporary folder: data/, server.log, the socket
        self.bin_dir: Path | None = None
        self.started_in: float | None = None  # seconds from start() to accepting connections

    # --- paths and the URI
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "server.log"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI (postgresql+psycopg://... or postgresql+psycopg2://...)."""
        assert self.port is not None, "not started"
        return f"postgresql+{driver() or 'psycopg'}://{self.db_user}:{self.password}@127.0.0.1:{self.port}/{self.dbname}"

    # --- running its programs as the server's user
    def _run(self, program: str, *args: str, timeout: float = 120, env_extra: dict | None = None) -> subprocess.CompletedProcess:
        assert self.bin_dir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "LANG": "C"} | (env_extra or {})
        kwargs: dict = {}
        if self.user is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            env |= {"HOME": entry.pw_dir, "USER": self.user, "LOGNAME": self.user}
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # the server it starts ignores the test's Ctrl-C; stop() stops it
            **kwargs,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}{self._log_tail()}")
        return done

    def _log_tail(self) -> str:
        if self.root is None or not self.log_path.exists():
            return ""
        return "\nserver log:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    # --- start and stop
    def start(self, timeout: float = 60) -> PostgresServer:
        reason = server_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        t0 = time.monotonic()
        self.bin_dir = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir=self.base_dir))
        atexit.register(self.stop)
        try:
            if self.user is not None and os.geteuid() == 0:
                entry = pwd.getpwnam(self.user)
                os.chown(self.root, entry.pw_uid, entry.pw_gid)
                blocked = unreachable_folder(self.root, self.user)
                if blocked is not None:
                    mode = stat.filemode(blocked.stat().st_mode)
                    raise RuntimeError(f"user {self.user} cannot enter {blocked} ({mode}): give a base_dir it can reach, or none")
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self.user is not None and os.geteuid() == 0:
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            pwfile.chmod(0o600)
            # the superuser's password from a file (never on a command line); trust on the cluster's own socket only
            auth = ("--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", str(pwfile))
            self._run("initdb", "-D", str(self.data_dir), "-U", self.db_user, *auth, "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
            pwfile.unlink()
            self._start_cluster(timeout)
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.db_user, self.dbname, env_extra={"PGPASSWORD": self.password})
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _start_cluster(self, timeout: float) -> None:
        """pg_ctl start -w on a free port, tried again on another port if that one was taken meanwhile."""
        for attempt in range(3):
            self.port = self.requested_port or free_port()
            # its Unix socket in its own folder, or none where that path would pass the socket path limit (107 bytes)
            socket_dir = str(self.root) if len(str(self.root)) < 80 else ""
            settings = SETTINGS | {"port": str(self.port), "unix_socket_directories": f"'{socket_dir}'"}
            with open(self.data_dir / "postgresql.conf", "a") as conf:  # later lines override earlier ones
                conf.write("\n# PostgresServer\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", str(int(timeout)), "start", timeout=timeout + 30)
                return
            except RuntimeError as e:
                taken = re.search(r"could not bind|address already in use", str(e), re.IGNORECASE)
                if not taken or self.requested_port or attempt == 2:
                    raise

    def stop(self) -> None:
        """Stop the server (pg_ctl stop -m fast, then -m immediate, then SIGKILL) and remove its folder; idempotent."""
        atexit.unregister(self.stop)
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop", timeout=60)
                        break
                else:
                    self._kill_postmaster()
        finally:
            root, self.root = self.root, None
            shutil.rmtree(root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """SIGKILL the postmaster named in postmaster.pid, when pg_ctl could not stop it."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int((self.data_dir / "postmaster.pid").read_text().splitlines()[0]), signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        return self if self.root is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
