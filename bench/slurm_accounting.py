"""Slurm's accounting for a private cluster (`bench.slurm.local_slurm(accounting=True)`), so `sacct`
answers: a private MariaDB server (`apt-get install mariadb-server slurmdbd`) on a free port with
its data in the cluster's folder, and `slurmdbd` on it. Both are stopped on exit."""
from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

DBD_PORT = 16819
PATH = "/usr/sbin:/sbin:/usr/bin:/bin"


def available() -> str:
    missing = [c for c in ("mariadbd", "mariadb-install-db", "slurmdbd", "sacctmgr")
               if shutil.which(c, path=PATH) is None]
    return f"{', '.join(missing)} not found: apt-get install mariadb-server slurmdbd" if missing else ""


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dbd_conf(work: Path, db_port: int, munge_socket: Path | None) -> str:
    lines = ["AuthType=auth/munge", "DbdHost=localhost", f"DbdPort={DBD_PORT}", "SlurmUser=root",
             "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={db_port}",
             "StorageUser=root", "StorageLoc=slurm_acct_db", f"PidFile={work}/slurmdbd.pid",
             f"LogFile={work}/slurmdbd.log"]
    if munge_socket:
        lines.append(f"AuthInfo=socket={munge_socket}")
    return "\n".join(lines) + "\n"


def conf_lines(munge_socket: Path | None) -> list[str]:
    """slurm.conf's side: where slurmdbd is; a private munged's socket is named by AccountingStoragePass."""
    lines = ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
             f"AccountingStoragePort={DBD_PORT}"]
    return lines + ([f"AccountingStoragePass={munge_socket}"] if munge_socket else [])


def start_accounting(work: Path, munge_socket: Path | None, env: dict[str, str],
                     start: Callable[[list[str]], object], until: Callable[[Callable[[], object], float, str], None]
                     ) -> None:
    """MariaDB and slurmdbd for the cluster whose slurm.conf is in `work` (slurmdbd.conf is written
    beside it, where slurmdbd looks); `start(argv)` starts a daemon the caller stops."""
    data = work / "mariadb"
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={data}", "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True, env=env)
    port = _free_port()
    start(["mariadbd", "--user=root", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
           f"--socket={work}/mariadb.sock", f"--pid-file={work}/mariadb.pid", "--skip-grant-tables",
           f"--log-error={work}/mariadb.log"])
    until(lambda: _answers(port), 60, "MariaDB")
    conf = work / "slurmdbd.conf"
    conf.write_text(dbd_conf(work, port, munge_socket))
    conf.chmod(0o600)
    start(["slurmdbd", "-D"])
    until(lambda: _answers(DBD_PORT), 60, "slurmdbd")
    until(lambda: subprocess.run(["sacctmgr", "-i", "add", "cluster", "bench"], env=env,
                                 capture_output=True).returncode == 0, 30, "the cluster added to accounting")


def _answers(port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
