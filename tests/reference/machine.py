"""What the benchmark scripts print about the machine they ran on (BENCHMARKS.md names the
CPU of every table)."""

import platform


def cpuinfo_field(key):
    """The first value of `key` in /proc/cpuinfo ("model name", "flags"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name():
    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags():
    return set((cpuinfo_field("flags") or "").split())
