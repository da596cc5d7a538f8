"""Whole-model checkpoints (YOLO's ``best.pt``: a dict whose ``ema`` or ``model`` holds the module, or a bare pickled
module): loaded only when trusted (unpickling runs code), and while it runs, nothing installed (the forks'
auto-install switches off, a ``pip install`` its code starts recorded, not run)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .boundary import ModelLoadError, what_was_raised
from .builtin import with_recipe
from .inputs import InputRecipe
from .options import ModelSpec
from .weights import load_weights, read_state_dict

__all__ = ["InstallAttempt", "installing_nothing", "is_checkpoint_path", "load_checkpoint"]


CHECKPOINT_RECIPE = InputRecipe(640, "letterbox", "none")  # YOLO's


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")


def is_checkpoint_path(spec: str) -> bool:
    """Whether ``--model`` names a file (a whole-model checkpoint) rather than a built-in or a factory."""
    return Path(spec).suffix in CHECKPOINT_SUFFIXES or Path(spec).is_file()


AUTOINSTALL_SWITCHES = ("YOLOv5_AUTOINSTALL", "YOLO_AUTOINSTALL")  # YOLOv5's and ultralytics' check_requirements


_PIP_INSTALL = re.compile(r"(?:^|[\s/\\])(?:pip3?|pip3?\.\d+|-m\s+pip|uv\s+pip)\s+install\b(?P<rest>.*)", re.DOTALL)


_guard_lock = threading.Lock()


@dataclass
class InstallAttempt:
    """A ``pip install`` a checkpoint's code started while it was loading (not run)."""

    command: str
    arguments: list[str]

    @property
    def packages(self) -> list[str]:
        return [argument for argument in self.arguments if not argument.startswith("-")]

    @property
    def instead(self) -> str:
        """The command that installs the same into the environment attnlens runs in."""
        return shlex.join([sys.executable, "-m", "pip", "install", *self.arguments])


def _install_attempt(command: Any) -> InstallAttempt | None:
    text = command if isinstance(command, str) else " ".join(map(str, command)) if isinstance(command, (list, tuple)) \
        else str(command)
    match = _PIP_INSTALL.search(text)
    if match is None:
        return None
    try:
        arguments = shlex.split(match["rest"])
    except ValueError:
        arguments = match["rest"].split()
    arguments = [argument for argument in arguments if argument not in ("&&", ";", "|")]
    return InstallAttempt(text.strip(), arguments)


@contextmanager
def installing_nothing() -> Iterator[list[InstallAttempt]]:
    """While a trusted checkpoint unpickles (its code runs): the forks' auto-install switches are off, and a
    ``pip install`` the code starts itself (``os.system``, ``os.popen``, ``subprocess``) is not run but recorded
    (``os.system`` answers a failure status, ``subprocess`` an ``OSError``). Process-wide while it lasts."""
    attempts: list[InstallAttempt] = []
    system, popen = os.system, subprocess.Popen

    def refusing_system(command):
        attempt = _install_attempt(command)
        if attempt is None:
            return system(command)
        attempts.append(attempt)
        return 1 << 8  # exit status 1, as os.system reports it

    class RefusingPopen(popen):
        def __init__(self, args, *more, **options):
            attempt = _install_attempt(args)
            if attempt is not None:
                attempts.append(attempt)
                raise OSError(f"attnlens installs nothing while loading a checkpoint: {attempt.command}")
            super().__init__(args, *more, **options)

    with _guard_lock:
        saved = {name: os.environ.get(name) for name in AUTOINSTALL_SWITCHES}
        os.environ.update({name: "False" for name in AUTOINSTALL_SWITCHES})
        os.system, subprocess.Popen = refusing_system, RefusingPopen
        try:
            yield attempts
        finally:
            os.system, subprocess.Popen = system, popen
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def load_checkpoint(path: str, weights: str | None, trust: bool) -> ModelSpec:
    """A whole pickled model: YOLO's ``(ckpt.get("ema") or ckpt["model"]).float()``, or a bare module."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    if not trust:
        try:  # harmless: a plain state_dict needs no trust, but an architecture
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any failure here means it is not a plain state_dict
            state = None
        if isinstance(state, Mapping):
            raise ModelLoadError(f"{path} holds weights only (a state_dict), not a model: give the architecture with "
                                 f"--model package.module:factory and this file with --weights {path}")
        raise ModelLoadError(f"refusing to load {path}: a whole-model checkpoint is a pickle, and loading it runs "
                             f"code from the file. If you trust the file, pass --trust-checkpoint "
                             f"(ATTNLENS_TRUST_CHECKPOINT=1, or trust_checkpoint = true in a models file)")
    with installing_nothing() as attempts:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as error:
            raise ModelLoadError(_missing_module(path, error, attempts)) from error
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - unreadable, corrupt, or its code failed: one clear line
            if attempts:
                raise ModelLoadError(_missing_module(path, error, attempts)) from error
            raise ModelLoadError(f"cannot read {path}: {what_was_raised(error)}") from error
    module = loaded
    if isinstance(loaded, Mapping):
        module = loaded.get("ema") or loaded.get("model")
    if not isinstance(module, nn.Module):
        found = ", ".join(map(str, list(loaded)[:8])) if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ModelLoadError(f"{path} holds no model (no nn.Module, nor one under 'ema' or 'model'; found: {found}). "
                             f"For a state_dict, give the architecture with --model package.module:factory and the "
                             f"file with --weights")
    module = module.float()
    if weights:
        load_weights(module, read_state_dict(weights), weights)
    return with_recipe(module, CHECKPOINT_RECIPE)


def _missing_module(path: str, error: BaseException, attempts: list[InstallAttempt]) -> str:
    """One line for a checkpoint whose code needs what this environment lacks."""
    if attempts:
        attempt = attempts[0]
        return (f"{path} needs {', '.join(attempt.packages) or 'a package'}: its code tried to run "
                f"`{attempt.command}` while loading (stopped: attnlens installs nothing). Install it into the "
                f"environment attnlens runs in: {attempt.instead}")
    missing = getattr(error, "name", None) or str(error)
    top = missing.split(".")[0]
    return (f"{path} needs the module {missing!r}, which cannot be imported here: if it is your project's code (e.g. "
            f"the YOLO fork's {top}/), run attnlens from the project's folder (now {Path.cwd()}) or put it on "
            f"PYTHONPATH; if it is a package, install it into the environment attnlens runs in: "
            f"{shlex.join([sys.executable, '-m', 'pip', 'install', top])}")
