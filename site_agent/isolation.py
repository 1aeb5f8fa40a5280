"""Keeping jobs apart from the agent and from each other with the operating system's own means:
OS users for Ray heads (and so for their jobs), folders handed to one user, and read access to a
dataset granted to a user only while one of its attempts names that dataset (POSIX ACLs).

The agent runs as root for this; its keys stay root's (0600), so no job can read them."""
from __future__ import annotations

import errno
import logging
import os
import pwd
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from federation.errors import ConfigError
from federation.spec import SiteConfig

log = logging.getLogger("site_agent")

_ACL = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class OSUser:
    name: str
    uid: int
    gid: int


def os_user(name: str, where: str) -> OSUser:
    """The OS user `name`; ConfigError naming `where` when it does not exist or the agent cannot
    become it."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"{where}: no OS user {name!r} on this machine (create it, e.g. "
                          f"`useradd --system {name}`)") from None
    if entry.pw_uid == 0:
        raise ConfigError(f"{where}: {name!r} is root; jobs must not run as root")
    if os.geteuid() != 0:
        raise ConfigError(f"{where}: running jobs as {name!r} needs the agent to run as root")
    return OSUser(name, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class JobUsers:
    """Which OS user runs a tenant's jobs: the tenant's own with tenant heads, else the site head's
    (`run_as`); None where jobs run as the agent's user."""

    run_as: str | None = None
    tenant_user: str | None = None   # with {tenant} in it
    where: str = "spec.ray.local.tenant_heads.user"

    @classmethod
    def of_config(cls, config: SiteConfig) -> JobUsers:
        if config.spec.backend == "slurm":
            return cls(None, config.spec.slurm.users, "spec.slurm.users")
        local = config.spec.ray.local
        return cls(local.run_as, local.tenant_heads.user if local.tenant_heads else None)

    def base(self) -> OSUser | None:
        return os_user(self.run_as, "spec.ray.local.run_as") if self.run_as else None

    def owns(self, uid: int) -> bool:
        """Whether `uid` is one of the users jobs run as here."""
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        if name == self.run_as:
            return True
        if self.tenant_user:
            prefix, _, suffix = self.tenant_user.partition("{tenant}")
            return name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)
        return False

    def of(self, tenant: str) -> OSUser | None:
        if self.tenant_user:
            return os_user(self.tenant_user.replace("{tenant}", tenant), self.where)
        return self.base()


def as_user(user: OSUser | None, argv: list[str]) -> list[str]:
    """`argv` run as `user`, with none of the agent's supplementary groups.

    setpriv, not Popen's `user=`: Python forks for `user=`, and in a process with gRPC's threads
    gRPC's fork handlers now and then crash the child before it execs (SIGSEGV, SIGABRT); without
    `user=`, Python starts the child with vfork, which runs no fork handlers."""
    if user is None:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ConfigError(f"running jobs as OS user {user.name!r} needs setpriv (util-linux) on the PATH")
    return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--", *argv]


def check_runs_python(user: OSUser, where: str) -> None:
    """ConfigError unless `user` can start this agent's Python, which its Ray head and jobs run."""
    try:
        subprocess.run(as_user(user, [sys.executable, "-c", ""]), check=True, capture_output=True, timeout=60,
                       cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        detail = e.stderr.decode(errors="replace").strip().splitlines()[-1:] if isinstance(
            e, subprocess.CalledProcessError) and e.stderr else [str(e)]
        raise ConfigError(f"{where}: OS user {user.name!r} cannot run {sys.executable} (resolved: "
                          f"{os.path.realpath(sys.executable)}); every folder above it and its "
                          f"libraries must be open to it ({detail[0][:200] if detail else e})") from None


def hand_over(paths: Iterable[Path], user: OSUser | None) -> None:
    """Make each folder or file `user`'s own, unreadable by anyone else (root aside)."""
    if user is None:
        return
    for path in paths:
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _entries(data: bytes) -> list[tuple[int, int, int]]:
    if len(data) < 4 or struct.unpack_from("<I", data)[0] != _VERSION:
        return []
    return [struct.unpack_from("<HHI", data, 4 + 8 * i) for i in range((len(data) - 4) // 8)]


def _from_mode(mode: int) -> list[tuple[int, int, int]]:
    return [(_USER_OBJ, (mode >> 6) & 7, _UNDEFINED), (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED),
            (_OTHER, mode & 7, _UNDEFINED)]


def _acl(path: Path) -> bytes:
    try:
        return os.getxattr(path, _ACL)
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            raise
        return b""


def _set_user_entry(path: Path, uid: int, perm: int | None) -> None:
    """Give `uid` `perm` on `path` (None: take its entry away), keeping every other entry."""
    entries = _entries(_acl(path))
    if not entries:
        entries = _from_mode(os.stat(path).st_mode)
    users = {e[2]: e[1] for e in entries if e[0] == _USER and e[2] != uid}
    if perm is not None:
        users[uid] = perm
    base = {tag: p for tag, p, _ in entries if tag in (_USER_OBJ, _GROUP_OBJ, _OTHER)}
    groups = {e[2]: e[1] for e in entries if e[0] == _GROUP}
    out = [(_USER_OBJ, base[_USER_OBJ], _UNDEFINED), *((_USER, p, u) for u, p in sorted(users.items())),
           (_GROUP_OBJ, base[_GROUP_OBJ], _UNDEFINED), *((_GROUP, p, g) for g, p in sorted(groups.items()))]
    if users or groups:   # the mask bounds the group class: what it was, and what the users named now get
        mask = next((p for tag, p, _ in entries if tag == _MASK), base[_GROUP_OBJ])
        for p in users.values():
            mask |= p
        out.append((_MASK, mask, _UNDEFINED))
    out.append((_OTHER, base[_OTHER], _UNDEFINED))
    os.setxattr(path, _ACL, struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in out))


def _tree(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return [path, *sorted(path.rglob("*"))]


class DatasetGrants:
    """Which OS users may read which dataset paths: an attempt's user, each dataset it names, while
    the attempt lives. The files say exactly that after each call."""

    def __init__(self) -> None:
        self.by_attempt: dict[str, set[tuple[Path, int]]] = {}
        self.granted: set[tuple[Path, int]] = set()

    def allow(self, sid: str, paths: Iterable[Path], user: OSUser | None) -> None:
        if user is not None:
            self.by_attempt[sid] = {(p, user.uid) for p in paths}
            self._sync()

    def retain(self, live: set[str]) -> None:
        """Take back what attempts no longer alive were given."""
        if set(self.by_attempt) - live:
            self.by_attempt = {sid: g for sid, g in self.by_attempt.items() if sid in live}
            self._sync()

    def _sync(self) -> None:
        """Take back, then grant; what failed is tried again at the next call."""
        wanted = set().union(*self.by_attempt.values())
        kept = {g for g in sorted(self.granted - wanted) if not self._apply(*g, None)}
        failed = {g for g in sorted(wanted - self.granted) if not self._apply(*g, 4)}
        self.granted = (wanted - failed) | kept

    @staticmethod
    def _apply(path: Path, uid: int, perm: int | None) -> bool:
        try:
            for p in _tree(path):
                _set_user_entry(p, uid, None if perm is None else (perm | 1 if p.is_dir() else perm))
        except OSError as e:
            log.warning("dataset %s: cannot %s read access for uid %d: %s", path,
                        "grant" if perm else "take back", uid, e.strerror)
            return False
        return True

    def clear(self, paths: Iterable[Path], users: JobUsers) -> None:
        """Take back what an earlier agent of this site granted and could not take back (it was
        killed): every entry of a job user on the datasets' files."""
        for path in paths:
            try:
                for p in _tree(path):
                    for uid in {e[2] for e in _entries(_acl(p)) if e[0] == _USER and users.owns(e[2])}:
                        _set_user_entry(p, uid, None)
            except OSError as e:
                log.warning("dataset %s: cannot read or clear its ACL: %s", path, e.strerror)
