"""Enter the sandbox, then exec its command: `python -I -S confine.py SPEC -- COMMAND...` (Linux).

The worker runs this with its own interpreter and the standard library only (`-S`: no
site-packages), so nothing an upload brought (a `.pth` file in its venv, a build backend) runs
before the boundary is up. SPEC is JSON:

    {"user": [uid, gid] | null,     switch to this user (a root worker), else keep the worker's
     "network": false,               false: a network namespace of its own (only a loopback)
     "mount": true,                  a new root: `ro` read-only, `rw` writable, a private /tmp of `tmp_mb`
     "ro": [...], "rw": [...], "links": {"/bin": "usr/bin"}, "tmp_mb": 64, "cwd": "/dir"}

Paths are real paths (no symlinks), bound at the same place in the new root. A non-root worker
gets its namespaces inside a new user namespace. The worker asks only for what its start-up probe
(`--probe SPEC`) found the kernel allows, so any step that fails here is an error: exit 125, the
reason on stderr. Then no_new_privs (no setuid binary can raise privileges) and exec.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Callable, Iterable

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
BASE = "/tmp"  # a tmpfs covers it in the new mount namespace while the root is built; never the worker's
EXIT_CONFINE = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {source or fstype} on {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.pivot_root(_b(new_root), _b(put_old)), f"pivot_root {new_root}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(*, network: bool, mount_ns: bool) -> None:
    """A new network namespace (network false) and/or mount namespace; as non-root, inside a new
    user namespace that maps only the worker's own uid and gid."""
    flags = (0 if network else CLONE_NEWNET) | (CLONE_NEWNS if mount_ns else 0)
    if not flags:
        return
    if os.geteuid() == 0:
        _check(_libc.unshare(flags), "unshare")
    else:
        uid, gid = os.geteuid(), os.getegid()
        _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    if not network:
        _loopback_up()


def _loopback_up() -> None:
    """The new network namespace has only `lo`, down: bring it up (the sandbox's own, not the host's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def build_root(ro: Iterable[str], rw: Iterable[str], links: dict[str, str], tmp_mb: int) -> None:
    """Replace the root with a read-only tmpfs that shows `ro` read-only and `rw` writable, a private
    /tmp (a tmpfs of `tmp_mb` MiB, also at /dev/shm), a few devices and /proc. Nothing else."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do here reaches the host
    mount("tmpfs", BASE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.chdir(BASE)
    os.mkdir("newroot")
    os.mkdir("oldroot")
    pivot_root(".", "oldroot")  # the host's tree is at /oldroot while we bind from it
    os.chdir("/")
    mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.makedirs("/newroot/tmp")
    os.makedirs("/newroot/dev/shm")
    # First, so that paths under /tmp (a data directory there) are bound on top of it, not hidden.
    mount("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")
    mount("/newroot/tmp", "/newroot/dev/shm", None, MS_BIND)
    for link, target in links.items():
        os.makedirs(os.path.dirname("/newroot" + link), exist_ok=True)
        os.symlink(target, "/newroot" + link)
    for path in ro:
        _bind(path, writable=False)
    for path in rw:
        _bind(path, writable=True)
    for name in DEVICES:
        if os.path.exists(f"/oldroot/dev/{name}"):
            _bind(f"/dev/{name}", writable=True, devices=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/newroot/dev/{name}")
    os.makedirs("/newroot/proc")
    mount("/oldroot/proc", "/newroot/proc", None, MS_BIND | MS_REC)
    os.chdir("/newroot")
    pivot_root(".", ".")  # the old root is stacked on the new one ...
    _check(_libc.umount2(b".", MNT_DETACH), "umount the old root")  # ... and detached with the host's tree
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind(path: str, *, writable: bool, devices: bool = False) -> None:
    src, dst = "/oldroot" + path, "/newroot" + path
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()  # an empty file to mount on
    mount(src, dst, None, MS_BIND | MS_REC)
    flags = MS_NOSUID | (0 if devices else MS_NODEV) | (0 if writable else MS_RDONLY)
    for point in _mounts_under(dst):  # a recursive bind brings submounts (e.g. Docker's /etc/hosts)
        _remount(point, flags)


def _mounts_under(path: str) -> list[str]:
    points = []
    with open("/oldroot/proc/self/mountinfo") as info:  # paths in it are relative to our root: /newroot/...
        for line in info:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])  # "\040": a space
            if point == path or point.startswith(path + "/"):
                points.append(point)
    return sorted(set(points), key=len)


def _remount(point: str, flags: int) -> None:
    """Add `flags` and keep the flags the mount has: in a user namespace they are locked, and a
    remount that drops one (noexec, an atime mode, read-only) is refused."""
    have = os.statvfs(point).f_flag
    for st, ms in ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                   (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):
        if have & st:
            flags |= ms
    if not have & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= MS_STRICTATIME
    mount(None, point, None, MS_REMOUNT | MS_BIND | flags)


def switch_user(uid: int, gid: int) -> None:
    """setuid from root drops every capability; the saved ids go too, so there is no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def confine(spec: dict) -> None:
    enter_namespaces(network=spec.get("network", True), mount_ns=spec.get("mount", False))
    if spec.get("mount"):
        build_root(spec.get("ro", ()), spec.get("rw", ()), spec.get("links", {}), spec.get("tmp_mb", 64))
    if spec.get("user"):
        switch_user(*spec["user"])
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if spec.get("cwd"):
        os.chdir(spec["cwd"])


# -- the start-up probe ---------------------------------------------------------------------------------

def probe(spec: dict) -> dict[str, str | None]:
    """Each part on its own, in a forked child: None where it works, else why not. `reach`: which
    of the paths in `reach` the sandbox user cannot read where they are (without a mount namespace)."""
    steps: dict[str, Callable[[], None]] = {
        "network": lambda: enter_namespaces(network=False, mount_ns=False),
        "mount": lambda: (enter_namespaces(network=True, mount_ns=True),
                          build_root(spec.get("ro", ()), (), spec.get("links", {}), 1)),
    }
    if spec.get("user"):
        steps["user"] = lambda: switch_user(*spec["user"])
        steps["reach"] = lambda: (switch_user(*spec["user"]), _check_reach(spec.get("reach", ())))
    return {name: _in_child(step) for name, step in steps.items()}


def _check_reach(paths: Iterable[str]) -> None:
    missing = [p for p in paths if not os.access(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0))]
    if missing:
        raise PermissionError(f"cannot read {', '.join(missing)}")


def _in_child(step: Callable[[], None]) -> str | None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write, str(exc).encode()[:2000])
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        message = reader.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return None if status == 0 else message or f"failed (wait status {status})"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe(json.loads(argv[1]))))
        return 0
    if len(argv) < 3 or argv[1] != "--":
        print("usage: confine.py SPEC -- COMMAND... | --probe SPEC", file=sys.stderr)
        return 2
    try:
        confine(json.loads(argv[0]))
        os.execv(argv[2], argv[2:])
    except OSError as exc:
        print(f"sandbox: cannot confine the process: {exc}", file=sys.stderr)
    return EXIT_CONFINE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
