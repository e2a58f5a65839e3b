"""npm packages the tests use unchanged (openid-client, axe-core): each folder's package.json
pins exact versions; they are installed on first use (npm's cache makes later installs work
offline), one install at a time however many test runs start together."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="Node.js and npm are needed for the JavaScript peers")


def installed(node_dir: Path) -> bool:
    """Whether node_modules holds exactly the versions package.json pins."""
    pins = json.loads((node_dir / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = node_dir / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def ensure_installed(node_dir: Path) -> Path:
    with open(node_dir.parent / ".node-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed(node_dir):
            command = "ci" if (node_dir / "package-lock.json").exists() else "install"
            done = subprocess.run(["npm", command, "--no-audit", "--no-fund", "--prefer-offline"], cwd=node_dir,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"npm {command} failed:\n{done.stdout}\n{done.stderr}"
        assert installed(node_dir), f"npm did not install the versions {node_dir}/package.json pins"
    return node_dir
