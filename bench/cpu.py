"""CPU time of processes, read from /proc: what each process spends per trace, which a rate cannot tell on a
machine shared with other jobs.

`cpu_s(pid)` is utime + stime of the process (all its threads) in seconds, in clock ticks of
`os.sysconf("SC_CLK_TCK")` (10 ms on Linux); with `children=True` it adds the reaped children's
(cutime + cstime) and every live descendant's own. `CpuMeter` samples named processes at the start and
end of a phase; `CpuReport` turns the phases into ms per trace and shares, as a table and a dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own ticks = utime + stime, reaped children's ticks = cutime + cstime); None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses; field 3 is fields[0]
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])  # fields 14-17
    return int(fields[1]), utime + stime, cutime + cstime


def cpu_s(pid: int, children: bool = True) -> float:
    """CPU seconds the process has used so far (0.0 if it is gone); see the module docstring."""
    if not children:
        stat = _stat(pid)
        return 0.0 if stat is None else stat[1] / TICKS_PER_S
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    if pid not in stats:
        return 0.0
    kids: dict[int, list[int]] = {}
    for child, (ppid, _, _) in stats.items():
        kids.setdefault(ppid, []).append(child)
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += stats[current][1] + stats[current][2]
        todo += kids.get(current, [])
    return total / TICKS_PER_S


def native_thread_s(pid: int) -> float:
    """CPU seconds of the process's live threads that do not carry its own name: the threads a native library
    started and named (chDB's pools, in the sink), apart from the interpreter's (0.0 if it is gone)."""
    try:
        own = Path(f"/proc/{pid}/comm").read_text().strip()
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    ticks = 0
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
        name = text[text.index("(") + 1:text.rindex(")")]
        if name != own:
            fields = text[text.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS_PER_S


@dataclass
class CpuMeter:
    """Named processes, sampled together: `start()` then `stop()` gives each one's CPU seconds in between."""

    pids: Mapping[str, int]
    children: Mapping[str, bool] = field(default_factory=dict)  # default True
    _start: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        return {name: cpu_s(pid, self.children.get(name, True)) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._start = self.sample()

    def stop(self) -> dict[str, float]:
        end = self.sample()
        return {name: end[name] - self._start[name] for name in self.pids}


@dataclass(frozen=True)
class Phase:
    """CPU seconds per process while `items` traces went through in `wall_s` seconds (0 items: idle)."""

    cpu_s: dict[str, float]
    items: int
    wall_s: float

    def ms_per_item(self, name: str) -> float | None:
        return 1000 * self.cpu_s[name] / self.items if self.items and name in self.cpu_s else None

    def ms_per_s(self, name: str) -> float | None:
        return 1000 * self.cpu_s[name] / self.wall_s if self.wall_s and name in self.cpu_s else None


@dataclass
class CpuReport:
    """The run's CPU per process (`run`), and if measured the same processes at a steady lower rate (`steady`)
    and with nothing sent (`idle`: what a process spends per second whatever the load, polling and timers).
    `broker` names the broker's row; the rest is the non-broker share."""

    run: Phase
    broker: str
    steady: Phase | None = None
    idle: Phase | None = None

    def work_ms_per_trace(self, seconds: float, idle_s: float | None) -> float | None:
        """CPU above the idle floor per trace: the run's CPU less what the process spends per second with
        nothing to do, times the run's wall time. Steadier than ms/trace when other jobs stretch the run."""
        if self.idle is None or idle_s is None:
            return None
        return 1000 * max(0.0, seconds - idle_s / self.idle.wall_s * self.run.wall_s) / self.run.items

    def _sum(self, phase: Phase, which: str) -> float:
        return sum(s for name, s in phase.cpu_s.items() if which == "total" or name != self.broker)

    def as_dict(self) -> dict[str, object]:
        def row(name: str) -> dict[str, float | None]:
            return {"cpu_s": round(self.run.cpu_s[name], 3), "cores": round(self.run.cpu_s[name] / self.run.wall_s, 3),
                    "ms_per_trace": _round(self.run.ms_per_item(name)),
                    "steady_ms_per_trace": _round(self.steady.ms_per_item(name)) if self.steady else None,
                    "idle_ms_per_s": _round(self.idle.ms_per_s(name)) if self.idle else None,
                    "work_ms_per_trace": _round(self.work_ms_per_trace(
                        self.run.cpu_s[name], self.idle.cpu_s.get(name) if self.idle else None))}

        total, non_broker = self._sum(self.run, "total"), self._sum(self.run, "non-broker")
        return {
            "wall_s": round(self.run.wall_s, 3), "traces": self.run.items, "clock_ticks_per_s": TICKS_PER_S,
            "steady": None if not self.steady else {"wall_s": round(self.steady.wall_s, 3), "traces": self.steady.items},
            "idle_s": None if not self.idle else self.idle.wall_s,
            "processes": {name: row(name) for name in self.run.cpu_s},
            "total_ms_per_trace": round(1000 * total / self.run.items, 4),
            "broker_ms_per_trace": round(1000 * (total - non_broker) / self.run.items, 4),
            "non_broker_ms_per_trace": round(1000 * non_broker / self.run.items, 4),
            "broker_share": round((total - non_broker) / total, 4) if total else None,
            "non_broker_work_ms_per_trace": _round(self.work_ms_per_trace(
                non_broker, self._sum(self.idle, "non-broker") if self.idle else None)),
            "broker_work_ms_per_trace": _round(self.work_ms_per_trace(
                total - non_broker, self._sum(self.idle, "total") - self._sum(self.idle, "non-broker")
                if self.idle else None)),
        }

    def table(self) -> str:
        names = [*self.run.cpu_s, "non-broker", "total"]
        width = max(map(len, names)) + 2
        head = f"{'process':<{width}}{'cpu s':>7}{'cores':>7}{'ms/trace':>10}{'share':>7}"
        head += f"{'steady ms/trace':>17}" if self.steady else ""
        head += f"{'idle ms/s':>11}{'work ms/trace':>15}" if self.idle else ""
        lines = [head]
        total = self._sum(self.run, "total")
        for name in names:
            if name in self.run.cpu_s:
                seconds = self.run.cpu_s[name]
                steady = self.steady.cpu_s.get(name) if self.steady else None
                idle = self.idle.cpu_s.get(name) if self.idle else None
            else:
                seconds = self._sum(self.run, name)
                steady = self._sum(self.steady, name) if self.steady else None
                idle = self._sum(self.idle, name) if self.idle else None
            line = (f"{name:<{width}}{seconds:7.2f}{seconds / self.run.wall_s:7.2f}"
                    f"{1000 * seconds / self.run.items:10.3f}{seconds / total if total else 0:7.0%}")
            if self.steady:
                line += _cell(None if steady is None else 1000 * steady / self.steady.items, 17)
            if self.idle:
                line += _cell(None if idle is None else 1000 * idle / self.idle.wall_s, 11, ".0f")
                line += _cell(self.work_ms_per_trace(seconds, idle), 15)
            lines.append(line)
        return "\n".join(lines)


def _cell(value: float | None, width: int, spec: str = ".3f") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}{spec}}"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
