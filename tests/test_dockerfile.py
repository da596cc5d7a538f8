"""The Dockerfile's own commands, run here (no image is built: no container engine in CI): the healthcheck probes
the port the server listens on, the base's venv probe asks for what venv needs, the torch wheels come from the
index a build argument names (the CPU one by default), and the load check leaves no cache behind."""
import re
import subprocess
import sys
from pathlib import Path

from tests.serving import free_port, running_server

DOCKERFILE = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()


def healthcheck() -> str:
    """The Python code the HEALTHCHECK runs."""
    command = re.search(r'^HEALTHCHECK .*?\\\n\s*CMD python -c "(.*)"$', DOCKERFILE, re.M | re.S)
    assert command, "no HEALTHCHECK with a python -c command"
    return command.group(1)


def test_the_healthcheck_probes_the_port_the_server_listens_on():
    with running_server() as (base, _):  # on a free port, not 8000
        served = int(base.rsplit(":", 1)[1])
        probe = [sys.executable, "-c", healthcheck()]
        assert subprocess.run(probe, env={"ATTNLENS_PORT": str(served)}, timeout=30).returncode == 0
        assert subprocess.run(probe, env={"ATTNLENS_PORT": str(free_port())}, capture_output=True,
                              timeout=30).returncode != 0  # nothing listens there: unhealthy


def test_the_image_is_made_with_cpu_wheels_the_ensurepip_probe_and_no_cache_left():
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in DOCKERFILE
    assert re.search(r'pip install --index-url "\$\{TORCH_INDEX\}" torch==[\d.]+ torchvision==[\d.]+', DOCKERFILE)
    assert 'python3 -c "import ensurepip"' in DOCKERFILE and "venv --help" not in DOCKERFILE
    load_check = next(line for line in DOCKERFILE.split("RUN ") if "load_model(device='cpu')" in line)
    assert "TORCHINDUCTOR_CACHE_DIR=" in load_check and "rm -rf /tmp/load-check /tmp/torchinductor_*" in load_check
    assert re.search(r"^USER attnlens$", DOCKERFILE, re.M)


def test_a_mirror_and_a_ca_bundle_come_as_build_secrets_never_as_arguments(tmp_path):
    """Every pip command runs with the secrets mounted, through docker/pip-secrets.sh (run here on secret files):
    the index URL and CA bundle reach pip's environment and torch's mirror its --index-url; no ARG carries them."""
    runs = [run for run in DOCKERFILE.split("\nRUN ")[1:] if "pip " in run.split("\n#")[0]]
    assert len(runs) == 3  # the wheel, torch, attnlens
    for run in runs:
        assert "--mount=type=secret,id=pip_index_url" in run and "--mount=type=secret,id=pip_cert" in run
        assert "sh /usr/local/bin/pip-secrets" in run
    assert "--mount=type=secret,id=torch_index_url" in next(run for run in runs if "torch==" in run)
    assert not re.search(r"^(ARG|ENV) .*(INDEX_URL|PIP_CERT)", DOCKERFILE, re.M)
    script = Path(__file__).resolve().parents[1] / "docker" / "pip-secrets.sh"
    echo = ["sh", "-c", 'printf "%s|%s|%s" "$PIP_INDEX_URL" "$PIP_CERT" "$*"', "sh", "install", "--index-url",
            "https://download.pytorch.org/whl/cpu", "torch==2.14.1"]
    plain = subprocess.run(["sh", str(script), *echo], env={"SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=30)
    assert plain.stdout == "||install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1"  # none given
    (tmp_path / "pip_index_url").write_text("https://user:token@mirror.example/simple\n")
    (tmp_path / "pip_cert").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "torch_index_url").write_text("https://mirror.example/torch-cpu")
    given = subprocess.run(["sh", str(script), *echo], env={"SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=30)
    assert given.stdout == (f"https://user:token@mirror.example/simple|{tmp_path / 'pip_cert'}|"
                            "install --index-url https://mirror.example/torch-cpu torch==2.14.1")
