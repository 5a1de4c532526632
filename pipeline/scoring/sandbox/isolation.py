"""Who an uploaded scorer runs as, and what it sees: decided once per worker process, at start-up.

A root worker runs scorers as an unprivileged user: `evalstream-sandbox`, created if missing, or
EVALSTREAM_SANDBOX_UID / _GID. Every sandbox process (and every `pip install` for one) starts
through `confine.py`, which gives it, before its interpreter starts:
- a network namespace of its own (only a loopback) unless its upload declares `network`;
- a new root that shows the system (/usr, /etc, ...), the worker's Python and packages, its venv
  and its source, read-only, plus its private directory (HOME, TMPDIR) writable and a private /tmp.
A non-root worker gets the namespaces through a user namespace, and runs scorers as its own uid.
The start-up probe asks the kernel for each part; each part it refuses is logged as a warning that
says what is not enforced and what the operator can do.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pipeline
import scorers

log = logging.getLogger(__name__)

SANDBOX_USER = "evalstream-sandbox"
CONFINE = Path(__file__).with_name("confine.py")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
CERT_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "PIP_CONFIG_FILE")
TMP_MB = 64  # the private /tmp (and /dev/shm), in memory; big files belong in TMPDIR, on disk
_KERNEL_HINT = ("root needs CAP_SYS_ADMIN (Docker: --cap-add SYS_ADMIN, or a seccomp/AppArmor profile that allows "
                "unshare and mount); a non-root worker needs unprivileged user namespaces "
                "(sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
                "kernel.apparmor_restrict_unprivileged_userns=0)")


class SandboxUserError(Exception):
    pass


@dataclass(frozen=True)
class Isolation:
    """What every sandbox of this worker gets. `problems`: what is not enforced, as the warnings say."""

    uid: int | None = None  # switch to this user (the worker is root)
    gid: int | None = None
    user: str = ""  # for messages
    network_ns: bool = False  # uploads that do not declare network get no network
    mount_ns: bool = False  # a read-only view of the host, writable only in private directories
    problems: tuple[str, ...] = ()
    view: tuple[str, ...] = ()  # read-only in every sandbox: the system, the worker's Python and packages
    links: dict[str, str] = field(default_factory=dict)  # /bin -> usr/bin, recreated in the new root

    @property
    def complete(self) -> bool:
        return not self.problems

    def launcher(self, *, network: bool, ro: Iterable[Path] = (), rw: Iterable[Path] = (),
                 cwd: Path | None = None) -> tuple[str, ...]:
        """The argv prefix that confines the command after it: `python -I -S confine.py SPEC --`."""
        if not sys.platform.startswith("linux"):
            return ()
        spec = {"user": [self.uid, self.gid] if self.uid is not None else None,
                "network": network or not self.network_ns, "mount": self.mount_ns,
                "ro": outermost([*self.view, *(_real(p) for p in ro)]), "rw": [_real(p) for p in rw],
                "links": self.links, "tmp_mb": TMP_MB, "cwd": str(cwd) if cwd else None}
        return sys.executable, "-I", "-S", str(CONFINE), json.dumps(spec), "--"

    def give(self, path: Path) -> None:
        """Make a directory the sandbox user's own (its private directory)."""
        if self.uid is not None:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1)

    def give_tree(self, root: Path) -> None:
        if self.uid is not None:
            _chown_tree(root, self.uid, self.gid if self.gid is not None else -1)

    def take_back_tree(self, root: Path) -> None:
        """After `pip install` ran as the sandbox user: the worker's again, readable by all, writable by none
        else, so no scorer can change a venv that other scorers with the same requirements use."""
        if self.uid is not None:
            _chown_tree(root, os.geteuid(), os.getegid())
            make_readable(root)

    def summary(self) -> str:
        who = f"as {self.user}" if self.user else "as the worker's user"
        network = "without network unless their upload declares it" if self.network_ns else "WITH the worker's network"
        files = ("in a read-only view of the system and their own files" if self.mount_ns
                 else "WITH the worker's view of the filesystem")
        return f"uploaded scorers run {who}, {network}, {files}"


def outermost(paths: Iterable[str]) -> list[str]:
    """Sorted, without the paths inside another one (a bind brings what is under it)."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _real(path: Path | str) -> str:
    return os.path.realpath(path)


def host_view(env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """What every sandbox sees read-only: the system directories (symlinked ones recreated as links),
    the worker's interpreter and site-packages, the `pipeline` and `scorers` packages, and the
    certificate files the environment names."""
    links, paths = {}, []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            links[path] = os.readlink(path)
        elif os.path.isdir(path):
            paths.append(path)
    wanted = [sys.base_prefix, sys.prefix, *site.getsitepackages(), str(Path(pipeline.__file__).parent),
              str(Path(scorers.__file__).parent), "/etc/resolv.conf"]
    if site.ENABLE_USER_SITE:
        wanted.append(site.getusersitepackages())
    wanted += [value for name, value in (env or os.environ).items() if name in CERT_VARS]
    paths += [_real(p) for p in wanted if p and os.path.exists(p)]
    return outermost(paths), links


def sandbox_user(uid: int | None, gid: int | None) -> tuple[int, int, str]:
    """The configured uid (gid: configured, else its passwd group, else = uid), else `evalstream-sandbox`,
    created as a system user when missing."""
    if uid is not None:
        try:
            entry = pwd.getpwuid(uid)
            label, primary = f"{entry.pw_name} (uid {uid})", entry.pw_gid
        except KeyError:
            label, primary = f"uid {uid}", uid
        found = uid, primary if gid is None else gid, label
    else:
        entry = _user_entry() or _create_user()
        found = entry.pw_uid, entry.pw_gid if gid is None else gid, f"{SANDBOX_USER} (uid {entry.pw_uid})"
    if 0 in found[:2]:
        raise SandboxUserError(f"{found[2]} has uid or gid 0")
    return found


def _user_entry() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        return None


_CREATE = (
    ("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
     "/usr/sbin/nologin", "--comment", "evalstream uploaded scorers", SANDBOX_USER),
    ("adduser", "-S", "-D", "-H", "-h", "/nonexistent", "-s", "/sbin/nologin", SANDBOX_USER),  # BusyBox, Alpine
)


def _create_user() -> pwd.struct_passwd:
    """Workers starting together race here: a useradd that finds /etc/passwd locked fails, and the
    other worker's user shows up a moment later."""
    errors: list[str] = []
    for attempt in range(3):
        for command in _CREATE:
            if shutil.which(command[0]) is None:
                continue
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            entry = _user_entry()  # created, by us or by another worker at the same moment
            if entry is not None:
                if done.returncode == 0:
                    log.warning("sandbox: created the system user %s for uploaded scorers", SANDBOX_USER)
                return entry
            errors.append(f"{' '.join(command[:2])}: {(done.stderr or done.stdout).strip()[-300:]}")
        if not errors:
            break  # neither command is installed
        time.sleep(0.5 * (attempt + 1))
        entry = _user_entry()
        if entry is not None:
            return entry
    raise SandboxUserError(f"cannot create the user {SANDBOX_USER}: "
                           + ("; ".join(dict.fromkeys(errors)) or "neither useradd nor adduser is installed"))


def probe(spec: dict) -> dict[str, str | None]:
    """Ask the kernel (through confine.py, in forked children) which parts it allows."""
    done = subprocess.run([sys.executable, "-I", "-S", str(CONFINE), "--probe", json.dumps(spec)],
                          capture_output=True, text=True, timeout=60, check=False)
    try:
        return json.loads(done.stdout)
    except ValueError:
        reason = (done.stderr or done.stdout).strip()[-500:] or f"exit code {done.returncode}"
        return {"network": reason, "mount": reason, "user": reason if spec.get("user") else None}


@functools.lru_cache(maxsize=8)
def resolve_isolation(uid: int | None = None, gid: int | None = None, reach: str = "") -> Isolation:
    """Once per process (and per settings): create the user, probe the kernel, log what is not enforced.
    `reach`: a directory the sandbox user must be able to read without a mount namespace (the data directory)."""
    view, links = host_view()
    if not sys.platform.startswith("linux"):
        problem = ("not Linux: uploaded scorers run as the worker's user, with its network and its filesystem; "
                   "run workers on Linux to isolate them")
        isolation = Isolation(problems=(problem,), view=tuple(view))
        _log(isolation)
        return isolation
    problems: list[str] = []
    user: tuple[int, int, str] | None = None
    if os.geteuid() == 0:
        try:
            user = sandbox_user(uid, gid)
        except (SandboxUserError, OSError, subprocess.SubprocessError) as exc:
            problems.append(f"uploaded scorers run as ROOT: {exc}; set EVALSTREAM_SANDBOX_UID (and _GID) to an "
                            "unprivileged user, or run the worker as an unprivileged user")
    elif uid is not None and uid != os.geteuid():
        problems.append(f"EVALSTREAM_SANDBOX_UID={uid} is ignored: only a root worker can switch users; uploaded "
                        f"scorers run as the worker's uid {os.geteuid()}")
    found = probe({"user": list(user[:2]) if user else None, "ro": view, "links": links,
                   "reach": [*view, reach] if reach else view})
    if user and found.get("user"):
        problems.append(f"uploaded scorers run as ROOT: cannot switch to {user[2]}: {found['user']}; set "
                        "EVALSTREAM_SANDBOX_UID (and _GID) to a user this worker may switch to")
        user = None
    if found.get("network"):
        problems.append(f"uploaded scorers have the worker's network: no network namespace ({found['network']}). "
                        f"To isolate them, {_KERNEL_HINT}; or block the workers' egress (a Kubernetes "
                        "NetworkPolicy, a firewall)")
    if found.get("mount"):
        problems.append(f"uploaded scorers see the worker's filesystem: no mount namespace ({found['mount']}). "
                        "They can read what their user can read and write where it can write (/tmp, /var/tmp, "
                        f"/dev/shm). To isolate them, {_KERNEL_HINT}; or run workers in a read-only container")
        if user and found.get("reach"):
            problems.append(f"{user[2]} {found['reach']}: uploaded scorers will fail to start; make those "
                            "directories readable by it (chmod o+rx on them and their parents)")
    if os.geteuid() != 0 and (found.get("network") or found.get("mount")):
        problems.append(f"uploaded scorers run as the worker's uid {os.geteuid()} and can read every file it can "
                        "(the data directory, the rules file): run the worker as root, so they run as their own "
                        "user, or allow user namespaces")
    isolation = Isolation(uid=user[0] if user else None, gid=user[1] if user else None,
                          user=user[2] if user else "", network_ns=not found.get("network"),
                          mount_ns=not found.get("mount"), problems=tuple(problems), view=tuple(view), links=links)
    _log(isolation)
    return isolation


def _log(isolation: Isolation) -> None:
    if isolation.complete:
        log.info("sandbox: %s", isolation.summary())
        return
    log.warning("sandbox: ISOLATION INCOMPLETE: %s", isolation.summary())
    for problem in isolation.problems:
        log.warning("sandbox: NOT ENFORCED: %s", problem)


def make_readable(root: Path) -> None:
    """Readable (and directories enterable) by every user, writable by the owner only."""
    for path in _tree(root):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        executable = stat.S_ISDIR(st.st_mode) or mode & stat.S_IXUSR
        wanted = (mode | 0o444 | (0o111 if executable else 0)) & ~0o022
        if wanted != mode:
            os.chmod(path, wanted)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for path in _tree(root):
        os.lchown(path, uid, gid)


def _tree(root: Path) -> list[str]:
    """The root and everything under it, without following symlinks."""
    paths = [str(root)]
    for parent, dirs, files in os.walk(root):
        paths += [os.path.join(parent, name) for name in (*dirs, *files)]
    return paths
