"""The C baseline: benchmarks/libmodbus_server.c, built here with gcc and libmodbus.

    python3 -m benchmarks.cserver --count 500 --port-base 15020   (builds, then serves)

`build()` compiles the server once into build/benchmarks/ (gitignored), again only when
the source is newer than the binary; `libmodbus_server(count)` is a `procs.Server` for the
suite (benchmarks.run) like the minimal responder and pymodbus. Needs gcc, pkg-config and
Debian's libmodbus-dev (scripts/test installs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from benchmarks.procs import Server, free_port_range

SOURCE = Path(__file__).with_name("libmodbus_server.c")
BINARY = Path(__file__).resolve().parent.parent / "build" / "benchmarks" / "libmodbus_server"
NAME = "libmodbus C server, 1 process"


class BuildError(RuntimeError):
    """The C server could not be built: what is missing, in one line."""


def build() -> Path:
    """The server's binary, compiled when missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    for tool in ("gcc", "pkg-config"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed (apt-get install {tool})")
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libmodbus"], capture_output=True, text=True
    )
    if flags.returncode != 0:
        raise BuildError("libmodbus is not installed (apt-get install libmodbus-dev)")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    partial = BINARY.with_name(f"{BINARY.name}.{os.getpid()}")
    command = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(partial), str(SOURCE)]
    done = subprocess.run(command + flags.stdout.split(), capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"gcc failed: {done.stderr.strip()[-300:]}")
    partial.replace(BINARY)
    return BINARY


def libmodbus_server(count: int) -> Server:
    port_base = free_port_range(count)
    return Server(NAME, [str(build()), str(port_base), str(count)], count, port_base)


def main() -> None:
    parser = argparse.ArgumentParser(description="Build and run the libmodbus C baseline.")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--port-base", type=int, default=15020)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args()
    binary = str(build())
    os.execv(binary, [binary, str(args.port_base), str(args.count), str(args.lifetime)])


if __name__ == "__main__":
    main()
