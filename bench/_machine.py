"""Standard-library-only helpers shared by the bench scripts (any venv can import this file).

The benchmark machine may be shared (another session, CI, a build): `CpuWatch` measures how much
CPU *other* processes used while a figure was being taken, so a run done on a busy machine says so
in its own JSON instead of silently reporting slow numbers.
"""
from __future__ import annotations

import os
import statistics
import resource
import time
from pathlib import Path


def _busy_jiffies() -> int:
    """Busy CPU time of the whole machine, all cores, in clock ticks (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def _own_seconds() -> float:
    """CPU seconds used by this process and its reaped children (e.g. DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """Context manager: `foreign_cpu` = cores' worth of CPU used by other processes, as a fraction.

    0.0 means nobody else ran; 0.5 on a 2-core machine means one core was busy elsewhere on average.
    Children still running at exit (persistent workers) count as foreign. Linux only; None elsewhere.
    """

    def __enter__(self) -> "CpuWatch":
        self.foreign_cpu = None
        try:
            self._busy, self._own, self._t = _busy_jiffies(), _own_seconds(), time.perf_counter()
        except OSError:
            self._busy = None
        return self

    def __exit__(self, *exc) -> None:
        if self._busy is None:
            return
        wall = time.perf_counter() - self._t
        busy = (_busy_jiffies() - self._busy) / os.sysconf("SC_CLK_TCK")
        own = _own_seconds() - self._own
        ncpu = os.cpu_count() or 1
        self.foreign_cpu = round(max(0.0, busy - own) / (wall * ncpu), 3) if wall > 0 else None


def machine_info() -> dict:
    """Load average and core count at the time of the call: context for every JSON line."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {"cpus": os.cpu_count(), "loadavg_1m_at_start": load1}


def peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its largest reaped child, in MiB (Linux units)."""
    return {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def reset_peak_rss() -> None:
    """Start a new peak-RSS window for this process (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_since_reset_mb() -> float | None:
    """Peak resident memory (MiB) since the last `reset_peak_rss()` (VmHWM), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far, all threads."""
    t = os.times()
    return t.user, t.system


def wait_for_quiet(max_wait_s: float, busy_below: float = 0.1, sample_s: float = 3.0) -> float:
    """Block until the machine's CPU is under `busy_below` (fraction of all cores) for one sample.

    Returns the seconds waited (gives up after max_wait_s and returns anyway). Figures taken while
    another process computes are meaningless here: with 2 cores, two PyTorch processes oversubscribe
    the OpenMP threads and a batch can take 10-30x longer.
    """
    start = time.perf_counter()
    ncpu, tick = os.cpu_count() or 1, os.sysconf("SC_CLK_TCK")
    while True:
        b0, t0 = _busy_jiffies(), time.perf_counter()
        time.sleep(sample_s)
        busy = (_busy_jiffies() - b0) / tick / ((time.perf_counter() - t0) * ncpu)
        waited = time.perf_counter() - start
        if busy < busy_below or waited >= max_wait_s:
            return round(waited, 1)


def phase_figures(name: str, epochs: list, n_train: int) -> dict:
    """Median per-epoch figures of one fine_tune phase."""
    if not epochs:
        return {}
    train = statistics.median(e["train_s"] for e in epochs)
    valid = statistics.median(e["valid_s"] for e in epochs)
    return {
        f"{name}_epoch_s": train + valid,
        f"{name}_train_s": train,
        f"{name}_valid_s": valid,
        f"{name}_train_img_s": n_train / train,
        **({f"{name}_sys_frac": statistics.median(e["sys_s"] / (e["sys_s"] + e["user_s"]) for e in epochs)}
           if all(e.get("user_s") for e in epochs) else {}),
        f"{name}_epochs": [{k: round(v, 3) for k, v in e.items() if v is not None} for e in epochs],
    }


def time_to_accuracy(ready_s: float, epochs: list, target: float = 0.97) -> dict:
    """Seconds from the process's start until the valid accuracy first reached `target`: the time to a ready
    learner plus every epoch (train + valid) up to that one; None when it never did."""
    t = ready_s
    for e in epochs:
        t += e["train_s"] + e["valid_s"]
        if e.get("accuracy") is not None and e["accuracy"] >= target:
            return {f"time_to_{target:g}_s": t}
    return {f"time_to_{target:g}_s": None}


def timed(fn, repeats: int = 1) -> tuple:
    """Run fn `repeats` times; return (median seconds, all seconds, foreign_cpu of each, last result)."""
    secs, foreign, out = [], [], None
    for _ in range(repeats):
        with CpuWatch() as w:
            t = time.perf_counter()
            out = fn()
            secs.append(time.perf_counter() - t)
        foreign.append(w.foreign_cpu)
    return statistics.median(secs), [round(s, 3) for s in secs], foreign, out
