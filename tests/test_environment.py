"""`camp env` / trainer.environment: the report on this venv and on a real Python without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from trainer.environment import REQUIREMENTS, EnvironmentReport, _satisfies, check_environment

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


def test_report_on_the_project_venv_is_ok_and_exact():
    report = check_environment()
    assert report.ok and not report.missing and report.fix_command == ""
    assert report.python == sys.executable
    for name in ("torch", "lightning", "onnxruntime", "mlflow"):
        assert report.packages[name] == metadata.version(name)
    assert report.torch == metadata.version("torch")
    assert report.cuda_available is False or report.gpus  # on a GPU machine the GPUs are named
    assert "OK: this Python can run every camp job." in report.summary()
    again = EnvironmentReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


@pytest.mark.parametrize("version, requirement, ok", [
    ("2.13.0+cpu", "torch==2.13.0", True),
    ("2.12.1", "torch==2.13.0", False),
    ("1.26.4", "numpy<2", True),
    ("2.0.1", "numpy<2", False),
    ("23.1.0", "attrs>=23.2", False),
    ("25.3.0", "attrs>=23.2", True),
])
def test_version_rules(version, requirement, ok):
    assert _satisfies(version, requirement) is ok


def test_cli_on_a_python_without_torch_gives_the_install_command(tmp_path):
    """Debian's /usr/bin/python3 (QGIS's Python) has no torch here: `camp env` says what to run."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has torch on this machine")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([SYSTEM_PYTHON, "-m", "trainer", "env", "--json"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    report = EnvironmentReport.from_dict(json.loads(proc.stdout))
    assert not report.ok and report.python == SYSTEM_PYTHON and report.torch is None
    assert REQUIREMENTS["torch"] in report.missing and REQUIREMENTS["lightning"] in report.missing
    assert report.fix_command.startswith(f'"{SYSTEM_PYTHON}" -m pip install "torch==2.13.0"')
    assert '"numpy<2"' in report.fix_command  # pinned together with the rest, in one command
    text = subprocess.run([SYSTEM_PYTHON, "-m", "trainer", "env"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120).stdout
    assert "torch MISSING" in text and f"Fix: {report.fix_command}" in text
