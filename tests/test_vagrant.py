"""The Vagrant VM runs the same set-up as the README: Vagrantfile -> scripts/vm-provision.sh
-> scripts/setup.sh (what `make setup` runs)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _code_lines(path: Path) -> list[str]:
    """Lines of a script or Makefile without comments."""
    return [line.split("#", 1)[0] for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


@pytest.mark.vagrant
def test_vagrantfile_validates():
    # --ignore-provider: no VM provider (VirtualBox, libvirt) needs to be installed.
    proc = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vagrantfile_provisions_with_vm_provision_script():
    text = "\n".join(_code_lines(REPO / "Vagrantfile"))
    assert re.search(r'provision\s+"shell".*path:\s*"scripts/vm-provision\.sh"', text), text


def test_vm_provision_runs_the_readme_setup_command():
    calls = [line for line in _code_lines(REPO / "scripts" / "vm-provision.sh")
             if re.search(r"\bbash\s+\S*scripts/setup\.sh\b", line)]
    assert calls, "scripts/vm-provision.sh must run scripts/setup.sh"
    makefile = _code_lines(REPO / "Makefile")
    setup = makefile.index(next(line for line in makefile if line.startswith("setup:")))
    assert "bash scripts/setup.sh" in makefile[setup + 1]
    assert "make setup" in (REPO / "README.md").read_text()
