"""``attnlens eval --ray``: the evaluation on a Ray cluster gives a local run's files, byte for byte; a model the
workers cannot import is one line, soon; Ray missing is one line; the cluster is always shut down. Through the CLI
process, on clusters of this machine (2 CPUs, no dashboard): one attnlens starts (``--ray local``, on loopback) and
one the tests start (``ray start --head``, found through ``RAY_ADDRESS``).

On a shared machine: every process gets its own Ray temp dir (``RAY_TMPDIR``) and no ``RAY_ADDRESS`` it was not
given, ``auto`` is tried only where Ray is told it sees no cluster, and the tests' cluster is stopped by its own
processes (those of its temp dir and their children), never ``ray stop``: another user's cluster, or another test
run's, is neither joined nor stopped."""
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from torch import nn

from tests.app.labelled_data import write_dataset

pytest.importorskip("ray.data", reason="the Ray tests need the ray extra: pip install -e '.[test,ray]'")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("tests.app.labelled_data:flat_context", "tests.app.labelled_data:red_context")
FILES = ("summary.json", "per_image.csv", "report.html", "per_object.csv", "ground_truth.json",
         "detections/tests.app.colour_detectors:misses_small.json")
DETECTOR = "tests.app.colour_detectors:misses_small"  # AP and found / missed on Ray too


@pytest.fixture(scope="module")
def ray_tmpdir():
    """This module's own Ray temp dir (short: Ray's socket paths must fit in 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="ray-tests-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def attnlens(*args, env=None, cwd=ROOT, prelude="", tmpdir=None):
    """The CLI in a process of its own (``prelude``: Python run before it, in that process only), with no
    ``RAY_ADDRESS`` but the one ``env`` gives and, with ``tmpdir``, its own Ray temp dir."""
    code = f"import sys\n{prelude}\nfrom attnlens.cli import main\nmain(sys.argv[1:])"
    own = {"RAY_ADDRESS": ""} | ({"RAY_TMPDIR": str(tmpdir)} if tmpdir else {})
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, **own, **(env or {})})


def processes_of(temp_dir: str) -> set[int]:
    """The processes of the Ray cluster whose temp dir is ``temp_dir``: those naming it on their command line (its
    GCS server, raylet, monitors) and their children (the agents and workers its raylet starts)."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (parent, command)
    ours = {pid for pid, (_, command) in table.items() if temp_dir.encode() in command and pid != os.getpid()}
    while more := {pid for pid, (parent, _) in table.items() if parent in ours} - ours:
        ours |= more
    return ours


def stop_cluster(temp_dir: str, wait_s: float = 15) -> None:
    """Stop exactly the cluster of ``temp_dir``: SIGTERM to its processes, then SIGKILL to what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_of(temp_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while processes_of(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)


def ray_daemons() -> set[int]:
    """The pids of the Ray clusters' daemons running on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and command.rsplit(b"/", 1)[-1] in (b"gcs_server", b"raylet"):
            found.add(int(entry.name))
    return found


@contextlib.contextmanager
def http_server():
    """An HTTP server of this test on a free loopback port (its port), shut down after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray") / "data"
    yaml, _ = write_dataset(root)
    (root / "images" / "val" / "f.png").write_bytes(b"not an image")  # skipped the same way on Ray
    return yaml


RAY = Path(sys.executable).with_name("ray")
OWN_CLUSTER = {"RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}  # never another's; a second node needs the token


def start_head(temp_dir: str, cpus: int) -> str:
    """``ray start --head`` of ``cpus`` CPUs (no dashboard, a free port) in ``temp_dir``: its address."""
    started = subprocess.run([RAY, "start", "--head", "--num-cpus", str(cpus), "--include-dashboard", "false", "--port",
                              "0", "--disable-usage-stats", "--temp-dir", temp_dir], capture_output=True, text=True,
                             timeout=120, env={**os.environ, **OWN_CLUSTER})
    assert started.returncode == 0, started.stderr
    address = re.search(r"--address='?([\d.]+:\d+)", started.stdout + started.stderr)
    assert address, started.stdout
    return address.group(1)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster started as users start one (``ray start --head``), in a temp dir of its own: its address, for
    ``RAY_ADDRESS``; stopped by its own processes after (``stop_cluster``)."""
    temp_dir = tempfile.mkdtemp(prefix="ray-head-", dir="/tmp")
    try:
        yield start_head(temp_dir, 2)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def lines_dir():
    """A short temp dir of this test's, for ``TMPDIR``: where a run puts the file of Ray's own lines."""
    folder = Path(tempfile.mkdtemp(prefix="attnlens-tmp-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_gives_the_local_runs_files_and_shuts_its_cluster_down(dataset, tmp_path, ray_tmpdir):
    common = ["eval", "--data", dataset, "--model", MODELS[0], "--model", MODELS[1], "--model", DETECTOR, "--device", "cpu",
              "--batch-size", "2", "--reference", "gradcam,eigencam"]
    local = attnlens(*common, "--workers", "0", "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    before = ray_daemons()
    on_ray = attnlens(*common, "--ray", "local", "--out", tmp_path / "ray", tmpdir=ray_tmpdir)
    assert on_ray.returncode == 0, on_ray.stderr
    for name in FILES:  # the same images, batches, measures, intervals, kept best / worst images
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert "unreadable image (1; first: images/val/f.png" in on_ray.stderr
    assert on_ray.stdout.splitlines()[:-1] == local.stdout.splitlines()[:-1]  # the table (then where it wrote)
    # Ray's own lines (its INFO log, warnings about the working_dir, progress bars) stay off the terminal
    assert not [line for line in on_ray.stderr.splitlines() if "INFO" in line or "WARNING" in line]
    time.sleep(1)
    assert not ray_daemons() - before, "the cluster --ray local started is still running"


def test_ray_missing_and_ray_mistakes_are_one_line(dataset, tmp_path):
    """``auto`` with no cluster: Ray is told it sees none (no cluster file in this test's temp dir, no GCS server
    found), so a cluster someone else runs on this machine is never joined."""
    missing = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--ray", prelude="sys.modules['ray'] = None",
                       cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == \
        "attnlens: --ray needs Ray (Ray Data): pip install 'attnlens[ray]'"
    alone = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--ray-actors", "2")
    assert alone.returncode == 2 and alone.stderr.strip() == "attnlens: --ray-actors goes with --ray"
    start = time.monotonic()  # Ray itself waits minutes for an address nothing answers at
    nowhere = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--device", "cpu", "--ray",
                       env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert time.monotonic() - start < 30
    assert nowhere.returncode == 2 and nowhere.stderr.strip().startswith(
        "attnlens: no Ray cluster answers at 127.0.0.1:9 (RAY_ADDRESS)"), nowhere.stderr
    with http_server() as port:  # something that is not Ray answers there (a dashboard's port, say): Ray would hang
        for address in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
            start = time.monotonic()
            other = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--device", "cpu", "--ray", address)
            assert time.monotonic() - start < 60
            assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
            assert other.stderr.startswith(f"attnlens: something answers at {address}, but not a Ray cluster")
    none_running = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--device", "cpu", "--ray", "auto",
                            cwd=ROOT, tmpdir=tmp_path, prelude="import functools\nimport ray._private.services as services\n"
                                                              "services.find_gcs_addresses = functools.cache(list)")
    assert none_running.returncode == 2 and none_running.stderr.count("\n") == 1, none_running.stderr
    assert none_running.stderr.startswith("attnlens: cannot start or join the Ray cluster (auto)")


def test_more_model_actors_than_the_nodes_hold_is_one_line(dataset, ray_tmpdir):
    """More actors than this machine's cluster holds (half a CPU each at one thread, beside a decoder): one line
    before the run, with how many it holds (the pool would wait for ever for actors Ray cannot place)."""
    crowded = attnlens("eval", "--data", dataset, "--model", MODELS[0], "--device", "cpu", "--ray", "local",
                       "--ray-actors", "1000", tmpdir=ray_tmpdir)
    assert crowded.returncode == 2 and crowded.stderr.count("\n") == 1, crowded.stderr
    assert re.fullmatch(r"attnlens: the cluster's nodes cannot hold 1000 model actors asking 0\.5 CPUs each, beside a "
                        r"decoder: ask for fewer \(--ray-actors \d+ at most\)\n", crowded.stderr), crowded.stderr


def test_a_model_the_workers_cannot_import_is_one_line_soon(cluster, dataset, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "private_models.py").write_text("from tests.app.labelled_data import red_context  # noqa: F401\n")
    start = time.monotonic()
    # importable here (the driver's sys.path), not on the workers: neither in the folder shipped nor installed
    failed = attnlens("eval", "--data", dataset, "--model", "private_models:red_context", "--device", "cpu",
                      "--ray", env={"RAY_ADDRESS": cluster}, prelude=f"import sys; sys.path.insert(0, {str(elsewhere)!r})")
    assert time.monotonic() - start < 60
    assert failed.returncode == 2
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("attnlens: on the Ray workers: cannot import private_models:red_context"), failed.stderr
    assert "No module named 'private_models'" in last and str(ROOT) in last
    assert "Traceback" not in failed.stderr


def named_actors(address: str) -> list[list[str]]:
    """The named actors alive on the cluster at ``address`` (a driver of its own, as a user's would be)."""
    code = ("import json, ray, sys\nray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
            "print(json.dumps(sorted([a['namespace'], a['name']] for a in ray.util.list_named_actors(all_namespaces="
            "True))))")
    done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **OWN_CLUSTER})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cluster_users_started_is_joined_and_left_as_found(cluster, dataset, lines_dir):
    """``--ray`` alone joins RAY_ADDRESS's cluster, which is left running, without the system actors Ray Data
    starts (detached, they outlive the job); the terminal gets attnlens's lines and progress bar, not Ray's."""
    common = ["eval", "--data", dataset, "--model", MODELS[1], "--device", "cpu", "--reference", "none", "--json"]
    local = attnlens(*common, "--workers", "0")
    before = named_actors(cluster)
    joined = attnlens(*common, "--ray", "--ray-actors", "1", env={"RAY_ADDRESS": cluster, "TMPDIR": str(lines_dir)})
    assert joined.returncode == 0, joined.stderr
    assert not list(lines_dir.glob("attnlens-ray-*.log"))  # a run that went well leaves no file of them
    assert joined.stdout == local.stdout
    assert ray_daemons(), "attnlens stopped a cluster it did not start"
    assert named_actors(cluster) == before
    said = [line for line in re.split(r"[\r\n]+", joined.stderr) if line.strip()]
    assert said and all(line.startswith(("scoring", "attnlens:")) for line in said), joined.stderr


def test_a_module_given_in_python_cannot_go_to_the_workers(dataset):
    from attnlens.evaluation import evaluate

    with pytest.raises(ValueError, match="the workers load each model again from its options: give mine"):
        evaluate([("mine", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))], dataset, ray="local")


def test_a_run_that_stops_moving_ends_in_one_line_and_keeps_what_was_scored(dataset, tmp_path, ray_tmpdir,
                                                                             lines_dir):
    """A model that never finishes a batch on the workers (as a lost node leaves a run): no batch for
    ``--ray-stall-s`` ends the run with what Ray reports, exit 1, the summary of what was scored written; the cluster
    it started is shut down; Ray's own lines are in the file the line names."""
    before = ray_daemons()
    started = time.monotonic()
    stalled = attnlens("eval", "--data", dataset, "--model", "tests.app.broken_models:hangs_on_batches", "--device",
                       "cpu", "--batch-size", "2", "--reference", "none", "--ray", "local", "--ray-stall-s", "8",
                       "--out", tmp_path / "out", tmpdir=ray_tmpdir, env={"TMPDIR": str(lines_dir)})
    assert stalled.returncode == 1, stalled.stderr
    lines = [line for line in stalled.stderr.splitlines() if line.startswith("attnlens:")]
    assert len(lines) == 1 and "no batch finished for 8 s (0 of" in lines[0] and "Ray reports 1 of 1 nodes alive" in \
        lines[0] and f"what was scored is in {tmp_path / 'out'}" in lines[0], stalled.stderr
    kept = list(lines_dir.glob("attnlens-ray-*.log"))  # kept where Ray wrote anything (its core_worker lines)
    assert all(f"(Ray's own messages: {file})" in lines[0] and file.stat().st_size for file in kept)
    assert kept or "Ray's own messages" not in lines[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["incomplete"].startswith("no batch finished for 8 s") and summary["rows"] == []
    assert time.monotonic() - started < 200
    time.sleep(1)
    assert not ray_daemons() - before, "the cluster --ray local started is still running"


def close(a, b, tolerance: float = 1e-5) -> bool:
    """Whether two JSON values are equal, their numbers within ``tolerance`` relative (absolute near zero)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-3)
    return a == b


def test_more_actors_give_the_local_summary_within_the_stated_tolerance(dataset, tmp_path, ray_tmpdir):
    """Actors share the CPUs differently (each its own torch threads), which moves the last float bits: the README
    states 1e-5 relative; the summary is a local run's within it."""
    common = ["eval", "--data", dataset, "--model", MODELS[1], "--device", "cpu", "--batch-size", "2", "--reference",
              "eigencam"]
    local = attnlens(*common, "--workers", "0", "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    spread = attnlens(*common, "--ray", "local", "--ray-actors", "2", "--out", tmp_path / "ray", tmpdir=ray_tmpdir)
    assert spread.returncode == 0, spread.stderr
    ours, theirs = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("ray", "local"))
    assert close(ours, theirs)


def raylets_of(temp_dir: str) -> set[int]:
    """The raylets (one per node) of the Ray cluster whose temp dir is ``temp_dir``."""
    return {pid for pid in processes_of(temp_dir)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/raylet")}


HOLD_THE_HEAD = """
import sys, time
import ray
from ray._private import state

ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
head = next(node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"])

@ray.remote(num_cpus=1, resources={"node:__internal_head__": 0.001})
class Hold:
    def ready(self):
        return True

hold = Hold.remote()
ray.get(hold.ready.remote())
print("holding", flush=True)
deadline = time.monotonic() + 200
while time.monotonic() < deadline:
    if any("_Score" in actor["ActorClassName"] and actor["State"] == "ALIVE" and actor["Address"]["NodeID"] != head
           for actor in state.actors().values()):
        print("scoring on the second node", flush=True)
        break
    time.sleep(0.2)
"""


def test_a_node_lost_with_the_model_actor_is_recovered_from(dataset, tmp_path):
    """A head of one CPU and a second node of two (``ray start --address``, as a second machine joins): a driver of
    the test's holds the head's CPU until the model actor is running on the second node, whose raylet is then
    killed. The model actor and a decoder must both come back on the head's one CPU (before, the model actor held
    all of it and the run waited for a decoder for ever); the run ends well, with a local run's numbers."""
    common = ["eval", "--data", dataset, "--model", "tests.app.labelled_data:unhurried_red_context", "--device",
              "cpu", "--batch-size", "1", "--reference", "none"]
    local = attnlens(*common, "--workers", "0", "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    temp_dir = tempfile.mkdtemp(prefix="ray-two-", dir="/tmp")
    own = {**os.environ, **OWN_CLUSTER}
    holder = None
    try:
        address = start_head(temp_dir, 1)
        heads = raylets_of(temp_dir)
        second = subprocess.run([RAY, "start", "--address", address, "--num-cpus", "2", "--disable-usage-stats"],
                                capture_output=True, text=True, timeout=120, env=own)
        assert second.returncode == 0, second.stderr
        (second_raylet,) = raylets_of(temp_dir) - heads
        holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_HEAD, address], stdout=subprocess.PIPE, text=True,
                                  env=own)
        assert holder.stdout.readline().strip() == "holding"
        result = {}
        running = threading.Thread(target=lambda: result.update(done=attnlens(
            *common, "--ray", address, "--ray-stall-s", "60", "--out", tmp_path / "ray")))
        running.start()
        assert holder.stdout.readline().strip() == "scoring on the second node"
        holder.wait(timeout=60)  # its hold on the head's CPU goes with it
        os.kill(second_raylet, signal.SIGKILL)
        running.join()
    finally:
        if holder is not None and holder.poll() is None:  # the test failed while it held the head
            holder.kill()
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    done = result["done"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:-1] == local.stdout.splitlines()[:-1]  # the table, not the lost raylet's lines
    said = [line for line in re.split(r"[\r\n]+", done.stderr) if line.strip()]
    assert said and all(line.startswith(("scoring", "attnlens:")) for line in said), done.stderr
    ours, theirs = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("ray", "local"))
    assert close(ours, theirs)
