"""A trusted checkpoint whose code tries to pip-install what it lacks (as YOLOv5's models/common.py does for
``ultralytics``): nothing is installed, the forks' auto-install switches are off, and one line says what to run."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.app.conftest import DATA

FORK_COMMON = '''
import os
import subprocess

with open(os.environ["SWITCHES_SEEN"], "w") as seen:  # what the fork's check_requirements would read
    seen.write(os.environ.get("YOLOv5_AUTOINSTALL", "unset") + " " + os.environ.get("YOLO_AUTOINSTALL", "unset"))
try:
    import attnlens_absent_package
except ImportError:
    {install}
    import attnlens_absent_package
'''
FORK_MODEL = '''
import torch
from torch import nn
from forkmodels import common


class DetectionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)
'''


def make_fork(folder: Path, install: str) -> Path:
    """A fork's folder with its model code, and a checkpoint saved while its dependency was present."""
    package = folder / "forkmodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "common.py").write_text(FORK_COMMON.format(install=install))
    (package / "yolo.py").write_text(FORK_MODEL)
    (folder / "attnlens_absent_package.py").write_text("")  # present while saving only
    save = textwrap.dedent('''
        import torch
        from forkmodels.yolo import DetectionModel
        torch.save({"model": DetectionModel(), "epoch": 3}, "best.pt")
    ''')
    env = {**os.environ, "SWITCHES_SEEN": str(folder / "saving.txt"), "PYTHONPATH": str(folder)}
    subprocess.run([sys.executable, "-c", save], cwd=folder, check=True, env=env)
    (folder / "attnlens_absent_package.py").unlink()
    return folder / "best.pt"


@pytest.mark.parametrize("install", ['os.system("pip install -U attnlens_absent_package")',
                                     'subprocess.check_output("pip install attnlens_absent_package>=2", shell=True)',
                                     'subprocess.run(["pip3", "install", "--quiet", "attnlens_absent_package"])'])
def test_a_pip_install_from_checkpoint_code_is_stopped_and_said(tmp_path, install):
    fork = tmp_path / "fork"
    checkpoint = make_fork(fork, install)
    spy = tmp_path / "bin"
    spy.mkdir()
    for name in ("pip", "pip3"):  # the first pip on PATH: it must never run
        (spy / name).write_text(f"#!/bin/sh\ntouch {tmp_path / 'pip-ran'}\n")
        (spy / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{spy}:{os.environ['PATH']}", "SWITCHES_SEEN": str(tmp_path / "loading.txt")}
    result = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(DATA / "chelsea.jpg"), "--model",
                             str(checkpoint), "--trust-checkpoint", "--device", "cpu"], capture_output=True, text=True,
                            cwd=fork, env=env, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "pip-ran").exists()  # nothing installed anywhere
    assert "attnlens installs nothing" in result.stderr and "its code tried to run" in result.stderr
    assert f"{sys.executable} -m pip install" in result.stderr and "attnlens_absent_package" in result.stderr
    assert (tmp_path / "loading.txt").read_text() == "False False"  # YOLOv5_AUTOINSTALL, YOLO_AUTOINSTALL
    assert "YOLOv5_AUTOINSTALL" not in os.environ


def test_a_missing_module_of_the_project_says_where_to_run(tmp_path):
    fork = tmp_path / "fork"
    checkpoint = make_fork(fork, "pass")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "SWITCHES_SEEN": str(tmp_path / "loading.txt")}
    result = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(DATA / "chelsea.jpg"), "--model",
                             str(checkpoint), "--trust-checkpoint", "--device", "cpu"], capture_output=True, text=True,
                            cwd=elsewhere, env=env, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "needs the module 'forkmodels'" in result.stderr and "run attnlens from the project's folder" in result.stderr
