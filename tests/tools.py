"""The programs written by others that the tests drive: one rule for all of them.

scripts/test installs every one (Debian's mbpoll, prometheus with its promtool, tshark,
chromium, socat, nmap, iproute2), so a missing program is a broken test machine: the test that needs
it fails, saying which package to install. Nothing is skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NPM = Path(__file__).resolve().parent / "npm"  # npm packages the tests use (package.json)

PACKAGES = {
    "mbpoll": "mbpoll",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "tshark": "tshark",
    "chromium": "chromium",
    "socat": "socat",
    "nmap": "nmap",
    "ip": "iproute2",
    "setpriv": "util-linux",
    "npm": "npm",
}


def tool(name: str) -> str:
    """The path of program `name`; fails the calling test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: scripts/test installs it "
            f"(apt-get install {PACKAGES.get(name, name)})",
            pytrace=False,
        )
    return path


def npm_file(package: str, path: str) -> Path:
    """A file of an npm package of tests/npm/package.json; fails the calling test when the
    package is not installed."""
    found = NPM / "node_modules" / package / path
    if not found.is_file():
        pytest.fail(
            f"npm package {package} is not installed: scripts/test installs it "
            "(npm install --prefix tests/npm)",
            pytrace=False,
        )
    return found
