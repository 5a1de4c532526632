"""The environment variables a sandbox sees: basics plus an explicit allow-list, nothing else.

Uploaded code must not read the worker's secrets (EVALSTREAM_*, Slack tokens, API keys) unless
the operator allows them by name (`EVALSTREAM_SANDBOX_ENV_ALLOW=OPENAI_API_KEY,ANTHROPIC_*`).
`pip install` additionally gets pip's own configuration, proxies and CA bundles, and the real
HOME (pip reads its config and cache there).
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path

_LOCALE = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
_INSTALL = ("HOME", "PIP_*", "UV_*", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
            "https_proxy", "no_proxy", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_DUMPABLE = 4

log = logging.getLogger(__name__)


def parse_allow_list(text: str) -> tuple[str, ...]:
    """`"OPENAI_API_KEY, ANTHROPIC_*"` -> names or shell-style globs."""
    return tuple(part for part in re.split(r"[,\s]+", text) if part)


def matching(parent: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    patterns = tuple(patterns)
    return {k: v for k, v in parent.items() if any(fnmatchcase(k, p) for p in patterns)}


def _path(parent: Mapping[str, str], venv_bin: Path) -> str:
    return f"{venv_bin}:{parent.get('PATH') or _DEFAULT_PATH}"


def scorer_env(parent: Mapping[str, str], allow: Iterable[str], *, venv_bin: Path, home: Path) -> dict[str, str]:
    """For the scorer process: PATH, a private HOME and TMPDIR, locale, and the allowed variables."""
    env = matching(parent, _LOCALE)
    env.setdefault("LANG", "C.UTF-8")
    env.update({
        "PATH": _path(parent, venv_bin),
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per arena; keep RLIMIT_AS meaningful
    })
    env.update(matching(parent, allow))
    return env


def install_env(parent: Mapping[str, str], allow: Iterable[str], *, venv_bin: Path) -> dict[str, str]:
    """For `pip install` into a sandbox venv (build backends of sdists run uploaded-adjacent code too)."""
    env = matching(parent, (*_LOCALE, *_INSTALL))
    env.update({"PATH": _path(parent, venv_bin), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    env.update(matching(parent, allow))
    return env


def hide_process_environment() -> bool:
    """Make this (the worker's) process non-dumpable, so processes of the same user, sandboxes
    included, cannot read its /proc/<pid>/environ or its memory. Side effects: no core dumps of
    the worker, and attaching a debugger to it needs root. Linux only; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ok = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("sandbox: could not make the worker non-dumpable; uploaded scorers may read its environment "
                    "from /proc")
    return ok
