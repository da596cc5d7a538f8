"""The dataset evaluation on a Ray cluster (``attnlens eval --ray``): the same batches, the same scoring code
(``run.score_batch``), the same results as a local run.

The driver plans the batches as a local run does (``run.plan_batches``: by input shape, from the image headers),
and Ray Data runs them: a CPU stage decodes and prepares each batch's images, then an actor pool (each actor
loads the models once; a GPU each where the cluster has them) runs forward, capture and the per-image measures
and hands back the batch's scores and its best / worst images per map. The driver adds the batches up in plan
order (``BatchScores.add``), so ``summary.json``, ``per_image.csv`` and ``report.html`` are a local run's.

The workers import the models' code from the folder attnlens runs in, shipped to them as the job's
``working_dir``; the dataset's files must be readable on the workers under the same paths (a shared disk).
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from attnlens.models import LoadedModel, ModelOptions

from .coco_ap import AP_CONF, AP_MAX_DET
from .datasets import DataError, Dataset
from .run import BatchScores, _Prepared, plan_batches, score_batch

__all__ = ["RayError", "evaluate_on_ray", "ray_module"]

INSTALL = "pip install 'attnlens[ray]'"
CONNECT_TIMEOUT_S = 5
# an HTTP/2 client's preface and an empty SETTINGS frame: a gRPC server (a Ray cluster's GCS) answers with its own
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
PREFLIGHT_TIMEOUT_S = 120  # for the workers to import and load every model once, before the run
STALL_S = 300.0  # --ray-stall-s: no batch finished for this long (a lost node, a hung model) ends the run
SHIPPED_EXCLUDES = ["venv", "__pycache__", "*.pt", "*.pth", "*.safetensors", "runs", "build", "dist",
                    "e2e-screenshots"]  # besides what .gitignore and Ray leave out (.git, .venv)


class RayError(DataError):
    """Ray is missing, the cluster cannot be reached, or the workers cannot load a model: one line."""


class RayStall(RayError):
    """No batch finished for the stall limit: what Ray reports, in one line; ``partial``: the batches scored
    before (``BatchScores``), ``done`` of ``total`` batches."""

    def __init__(self, message: str, partial: BatchScores, done: int, total: int):
        super().__init__(message)
        self.partial, self.done, self.total = partial, done, total


def ray_module():
    """Ray, with Ray Data; ``RayError`` saying how to install it where it is not."""
    # Ray sends this machine's token (``ray start`` wrote it) to a cluster it starts or finds by itself, not to
    # one named by its address, unless asked before it is imported (a cluster without tokens accepts one)
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                                              or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayError(f"--ray needs Ray (Ray Data): {INSTALL}") from error
    return ray


def _first_line(error: BaseException) -> str:
    """A worker's error as one line: what the user's code raised, not Ray's wrapping of it."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    text = lines[-1] if lines and "Traceback" in lines[0] else lines[0] if lines else type(cause).__name__
    return text.strip()


def _load_all(options: Sequence[tuple[str, ModelOptions]], threads: int) -> list[tuple[str, Any]]:
    """On a worker: each model loaded once (``ModelLoadError`` in one line for one that does not), torch on
    ``threads`` threads (Ray gives a worker one by default)."""
    import torch

    from attnlens.analysis.engine import Engine
    from attnlens.models import load_model

    torch.set_num_threads(threads)
    return [(name, Engine(load_model(model))) for name, model in options]


def _check_models(options: Sequence[tuple[str, ModelOptions]], threads: int) -> None:
    """The preflight task: every model loaded as an actor will load it (what fails, fails here, in one line)."""
    _load_all(options, threads)


class _Decode:
    """CPU stage: a planned batch's images (a row: its number and its images' places in the list) decoded and
    prepared by every model's recipe (a local run's DataLoader workers do the same)."""

    def __init__(self, images, recipes):
        self.prepared = _Prepared(images, recipes)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        items = [pickle.dumps([self.prepared[int(i)] for i in places]) for places in batch["images"]]
        return {"batch": batch["batch"], "items": np.array(items, dtype=object)}


class _Score:
    """Actor stage: the models loaded once; each planned batch run and scored (``run.score_batch``)."""

    def __init__(self, options, images, references, threads, ap, knockout):
        self.engines, self.images, self.references = _load_all(options, threads), images, references
        self.ap, self.knockout = ap, knockout

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        parts = [pickle.dumps(score_batch(self.engines, self.images, self.references, int(n), pickle.loads(items),
                                          self.ap, self.knockout))
                 for n, items in zip(batch["batch"], batch["items"])]
        return {"batch": batch["batch"], "scores": np.array(parts, dtype=object)}


def _address(address: str | bool) -> str:
    """``True``: ``auto`` where ``RAY_ADDRESS`` names a cluster, else ``local``."""
    if address is True:
        return "auto" if os.environ.get("RAY_ADDRESS") else "local"
    return str(address)


def _check_reachable(address: str) -> None:
    """A cluster's address (``host:port``, ``ray://host:port``; ``auto``: ``RAY_ADDRESS``'s, where set) answers on
    TCP as a gRPC server does (a Ray cluster's GCS, a Ray Client server), within ``CONNECT_TIMEOUT_S`` each, or
    ``RayError`` at once: Ray itself waits minutes for an address nothing answers at, and forever for one where
    something else does (a dashboard's, an HTTP port)."""
    named = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        named = f"{address} (RAY_ADDRESS)"
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if address in ("", "local", "auto") or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.sendall(HTTP2_PREFACE)
            answer = connection.recv(9)
    except TimeoutError:
        answer = b""  # connected, then nothing said: not a gRPC server either
    except OSError as error:
        raise RayError(f"no Ray cluster answers at {named} ({error.strerror or error}): start one there with "
                       f"ray start --head, or give --ray local") from error
    if len(answer) < 4 or answer[3] != 0x04:  # a gRPC server answers the preface with its SETTINGS frame
        raise RayError(f"something answers at {named}, but not a Ray cluster (its GCS, or a Ray Client server, speaks "
                       f"gRPC; this one said {answer[:24]!r}): give the cluster's GCS address (ray start --head prints "
                       f"it, port 6379 by default), not its dashboard's or another service's")


def _for_workers(options: ModelOptions) -> ModelOptions:
    """The options with their files (a checkpoint, weights, labels) as absolute paths: the workers run in a copy of
    the current folder (which leaves weights out), a shared disk keeps the paths."""
    files = {name: str(Path(value).resolve()) for name in ("model", "weights", "labels")
             if isinstance(value := getattr(options, name), str) and Path(value).is_file()}
    return options.model_copy(update=files)


@contextmanager
def _cluster(ray, address: str):
    """Connected for the run, and disconnected after it (what ``local`` started, stopped; on a cluster joined, the
    system actors this run's Ray Data started, stopped: ``_left_as_found``). ``local``: a cluster of this machine
    (loopback, no dashboard); ``auto`` (or ``RAY_ADDRESS``) or an address: join that cluster. The current folder
    goes to the workers as the job's ``working_dir``. Ray's own lines go to a file (``_ray_lines_aside``)."""
    runtime_env = {"working_dir": os.getcwd(), "excludes": SHIPPED_EXCLUDES,
                   "env_vars": {"YOLO_AUTOINSTALL": "False", "YOLOv5_AUTOINSTALL": "False"}}
    quiet = {"runtime_env": runtime_env, "log_to_driver": False, "logging_level": logging.ERROR}
    _check_reachable(address)
    with _ray_lines_aside():
        try:
            try:
                if address == "local":
                    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
                else:
                    ray.init(address=address, **quiet)
                ray.data.DataContext.get_current().enable_progress_bars = False  # attnlens shows its own
                logging.getLogger("ray.data").setLevel(logging.ERROR)  # and says what went wrong in one line
            except Exception as error:  # noqa: BLE001 - Ray's own errors (no cluster there, a working_dir too large)
                raise RayError(f"cannot start or join the Ray cluster ({address}): {_first_line(error)}") from error
            if address == "local":
                yield
            else:
                with _left_as_found(ray):
                    yield
        finally:
            ray.shutdown()


@contextmanager
def _ray_lines_aside():
    """What Ray's C++ core writes to this process's stderr (its error-level lines, ``core_worker.cc: ...``, on
    runs that went well) and what its driver prints to ``sys.stdout`` (the raylets' error messages: a lost
    node's last log lines, its actors' retries) into a file while connected; attnlens's own lines and progress
    bar stay on the terminal (``sys.stderr`` kept on it, where it is the terminal's stream), and its results go to
    stdout after. A run that fails says where the file is (``RayError``); one that does not leaves none."""
    try:
        sys.stderr.flush()
        ours = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a notebook's stream: not the process's stderr
        ours = False
    descriptor, path = tempfile.mkstemp(prefix="attnlens-ray-", suffix=".log")
    terminal = os.dup(2)
    stream, results = sys.stderr, sys.stdout
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.stdout = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    if ours:
        sys.stderr = open(terminal, "w", buffering=1, encoding=stream.encoding, errors=stream.errors,  # noqa: SIM115
                          closefd=False)
    failed = False
    try:
        yield
    except BaseException as error:
        sys.stdout.flush()
        failed = os.path.getsize(path) > 0
        if failed and isinstance(error, RayError):
            error.args = (f"{error.args[0]} (Ray's own messages: {path})", *error.args[1:])
        raise
    finally:
        sys.stdout.close()
        sys.stdout = results
        if ours:
            sys.stderr.flush()
            sys.stderr = stream
        os.dup2(terminal, 2)
        os.close(terminal)
        if not failed:
            Path(path).unlink(missing_ok=True)


@contextmanager
def _left_as_found(ray):
    """A cluster joined, left as found: the named actors this job made there (Ray Data's stats, usage, autoscaling
    and actor location actors, detached: they outlive the job) stopped after the run. Actors that were there
    before, and any other job's, are left alone; a failure to tidy up fails nothing."""
    before = _named_actors(ray)
    try:
        yield
    finally:
        try:
            from ray._private import state

            job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
            ours = {actor.get("Name") for actor in state.actors(job_id=job).values()
                    if actor.get("State") != "DEAD" and actor.get("Name")}
            for name, namespace in _named_actors(ray) - before:
                if name in ours:
                    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except Exception:  # noqa: BLE001 - Ray's state unreadable or an actor gone already: nothing to stop
            pass


def _named_actors(ray) -> set[tuple[str, str]]:
    """The named actors alive on the cluster: ``(name, namespace)``."""
    return {(actor["name"], actor["namespace"]) for actor in ray.util.list_named_actors(all_namespaces=True)}


class _Placement(NamedTuple):
    gpus: int  # in the cluster
    actors: int  # model actors
    threads: int  # torch threads of each
    resources: dict  # what each asks of Ray
    decoders: int  # at most this many decoding actors
    decode_cpus: float  # what each asks of Ray


def _placement(ray, actors: int | None, local: bool) -> _Placement:
    """``actors`` model actors (default: one per GPU, else one), each with its node's CPUs shared by the actors
    there as torch threads (at most a local run's, on a cluster of this machine: then one actor computes as a
    local run does, to the last bit), asking Ray for a GPU and a CPU where there are GPUs, else for its CPUs but
    one, left to decoding (half a CPU where it has one thread: it shares that CPU with decoding); the decoders
    as ``_decoding`` plans them. ``RayError`` where the nodes cannot hold the model actors."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = int(sum(node.get("GPU", 0) for node in nodes))
    size = actors or max(1, gpus)
    if placement := _plan(nodes, gpus, size, local):
        return placement
    cpus = _plan_asks(nodes, gpus, size, local)[1]["num_cpus"]
    most = next((fewer for fewer in range(size - 1, 0, -1) if _plan(nodes, gpus, fewer, local)), None)
    raise RayError(f"the cluster's nodes cannot hold {size} model actors asking {cpus:g} CPU{'' if cpus == 1 else 's'}"
                   f"{' and a GPU' if gpus else ''} each, beside a decoder: ask for fewer (--ray-actors"
                   f"{f' {most} at most' if most else ''})")


def _plan_asks(nodes: Sequence[dict], gpus: int, size: int, local: bool) -> tuple[int, dict]:
    """Each model actor's torch threads and what it asks of Ray (``_placement``)."""
    node_cpus = min((int(node["CPU"]) for node in nodes if node.get("CPU")), default=1)
    threads = max(1, node_cpus // -(-size // max(1, len(nodes))))
    if local:
        import torch

        threads = min(threads, torch.get_num_threads())
    cpus = (1 if gpus else threads - 1) if threads > 1 else 0.5
    return threads, ({"num_gpus": 1, "num_cpus": cpus} if gpus else {"num_cpus": cpus})


def _plan(nodes: Sequence[dict], gpus: int, size: int, local: bool) -> _Placement | None:
    """``size`` model actors and their decoders on ``nodes``; None where the nodes cannot hold them."""
    threads, resources = _plan_asks(nodes, gpus, size, local)
    decoding = _decoding(nodes, size, resources)
    return _Placement(gpus, size, threads, resources, *decoding) if decoding else None


def _decoding(nodes: Sequence[dict], actors: int, resources: dict) -> tuple[int, float] | None:
    """How many decoding actors at most, and the CPUs each asks for: once the model actors are placed, as many as
    leave room for all of them and the model actors on what is left after losing any one node but the head
    (whose loss is the cluster's) that can be recovered from, so that Ray can restart what the node held (a
    decoder asking for less than a CPU where less is left); where no loss can be recovered from (or on a cluster
    of one node), as many as the CPUs hold beside the model actors; None where the model actors and a decoder do
    not fit at all. Counted in each node's CPUs left beside the model actors: decoders spread unevenly can still
    leave a model actor no node to restart on, which the stall watchdog then ends."""
    whole = [(float(node.get("CPU", 0)), float(node.get("GPU", 0))) for node in nodes]
    workers = [index for index, node in enumerate(nodes) if "node:__internal_head__" not in node]
    plans = [plan for lost in workers if (plan := _left_beside(whole[:lost] + whole[lost + 1:], actors, resources))]
    if not plans:  # no node's loss can be recovered from (or there is none to lose): the cluster whole
        plans = [plan] if (plan := _left_beside(whole, actors, resources)) else []
    if not plans:
        return None
    decode_cpus = min(1.0, *(max(left) for left in plans))
    decode_cpus = int(decode_cpus * 100) / 100  # Ray's resources are counted to 1e-4
    return max(1, min(sum(int(spare / decode_cpus + 1e-9) for spare in left) for left in plans)), decode_cpus


def _left_beside(nodes: list[tuple[float, float]], actors: int, resources: dict) -> list[float] | None:
    """The CPUs each node has left once ``actors`` model actors asking ``resources`` are placed on ``nodes``
    (``(CPUs, GPUs)``), each where the most CPUs are left among the nodes that hold it; None where they do not
    all fit with room for a decoder of at least a hundredth of a CPU."""
    cpus, gpus = resources["num_cpus"], resources.get("num_gpus", 0)
    left = [list(node) for node in nodes]
    for _ in range(actors):
        fitting = [node for node in left if node[0] >= cpus and node[1] >= gpus]
        if not fitting:
            return None
        node = max(fitting, key=lambda node: node[0])
        node[0] -= cpus
        node[1] -= gpus
    spare = [node[0] for node in left]
    return spare if max(spare, default=0) >= 0.01 else None


def evaluate_on_ray(models: Sequence[tuple[str, LoadedModel]], dataset: Dataset, references: Sequence[str],
                    batch_size: int, address: str | bool = True, actors: int | None = None,
                    progress: Callable[[int], Any] | None = None,
                    ap: tuple[float, int] = (AP_CONF, AP_MAX_DET), knockout: bool = False,
                    stall_s: float = STALL_S) -> BatchScores:
    """``run.evaluate_dataset``'s results, computed on a Ray cluster. ``models``: loaded here (their input recipes
    plan the batches); the workers load them again from their ``options``. ``address``: ``local``, ``auto``, a
    cluster's, or ``True`` (``auto`` where ``RAY_ADDRESS`` is set, else ``local``); ``actors``: the pool's size
    (default: one per GPU, else one). ``RayError`` in one line for what does not work; ``RayStall`` (with what was
    scored) when no batch finishes for ``stall_s`` seconds; the cluster this started is always shut down."""
    ray = ray_module()
    if ray.is_initialized():
        raise RayError("Ray is already initialised in this process: attnlens connects by itself (--ray ADDRESS)")
    images = [replace(image, path=Path(image.path).resolve()) for image in dataset.images]
    recipes = [model.recipe for _, model in models]
    plan = plan_batches(images, [model for _, model in models], batch_size)
    if not plan:  # no images: nothing to start a cluster for (a local run scores nothing either)
        return BatchScores()
    options = [(name, _for_workers(model.options)) for name, model in models]
    address = _address(address)
    with _cluster(ray, address):
        placement = _placement(ray, actors, address == "local")
        check = ray.remote(_check_models).options(**placement.resources)
        try:
            ray.get(check.remote(options, placement.threads), timeout=PREFLIGHT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as error:
            raise RayError(f"the Ray workers did not load the models within {PREFLIGHT_TIMEOUT_S} s (is there a "
                           f"free {'GPU' if placement.gpus else 'CPU'} in the cluster?)") from error
        except Exception as error:  # noqa: BLE001 - the user's model failing to import or load on a worker
            raise RayError(f"on the Ray workers: {_first_line(error)} (they import your code from {os.getcwd()}, "
                           f"shipped to them, or from what is installed there)") from error
        batches = [{"batch": number, "images": places} for number, places in enumerate(plan)]
        stream = (ray.data.from_items(batches, override_num_blocks=max(1, len(plan)))
                  .map_batches(_Decode, fn_constructor_args=(images, recipes), batch_size=1,
                               num_cpus=placement.decode_cpus,
                               compute=ray.data.ActorPoolStrategy(min_size=1, max_size=placement.decoders))
                  .map_batches(_Score,
                               fn_constructor_args=(options, images, tuple(references), placement.threads, ap, knockout),
                               batch_size=1, compute=ray.data.ActorPoolStrategy(size=placement.actors),
                               **placement.resources))
        bar = progress(len(images)) if progress else None
        parts: dict[int, BatchScores] = {}
        try:
            for row in _watched(stream, stall_s):
                if row is None:  # nothing finished for stall_s
                    raise RayStall(_stalled(ray, stall_s, len(parts), len(plan)), _in_order(parts, len(plan)),
                                   len(parts), len(plan))
                number = int(row["batch"])
                parts[number] = pickle.loads(row["scores"])
                if bar is not None:
                    bar.update(len(plan[number]))
        except RayStall:
            raise
        except Exception as error:  # noqa: BLE001 - a worker died, or the user's model raised outside its batch
            raise RayError(f"the Ray run failed: {_first_line(error)}") from error
        finally:
            if bar is not None:
                bar.close()
    return _in_order(parts, len(plan))


def _in_order(parts: dict[int, BatchScores], batches: int) -> BatchScores:
    """The batches scored, added in plan order (the local run's order); those missing left out."""
    total = BatchScores()
    for number in range(batches):
        if number in parts:
            total.add(parts[number])
    return total


def _watched(stream, stall_s: float):
    """The stream's rows, read on a thread of their own; None when none came for ``stall_s`` seconds (Ray Data
    itself waits forever for an actor that cannot start)."""
    rows: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for row in stream.iter_rows():
                rows.put(("row", row))
            rows.put(("done", None))
        except BaseException as error:  # noqa: BLE001 - handed to the driver's thread
            rows.put(("error", error))

    threading.Thread(target=pump, name="attnlens-ray-rows", daemon=True).start()
    while True:
        try:
            kind, value = rows.get(timeout=stall_s)
        except queue.Empty:
            yield None
            return
        if kind == "done":
            return
        if kind == "error":
            raise value
        yield value


def _stalled(ray, stall_s: float, done: int, total: int) -> str:
    """The stall in one line: how far the run got and what Ray reports of its nodes and free resources."""
    said = f"no batch finished for {stall_s:g} s ({done} of {total} batches scored; the run is stopped)"
    try:
        nodes = ray.nodes()
        alive = sum(bool(node.get("Alive")) for node in nodes)
        free, whole = ray.available_resources(), ray.cluster_resources()
        resources = ", ".join(f"{name} {free.get(name, 0):g} of {whole[name]:g} free" for name in ("CPU", "GPU")
                              if name in whole)
        said += f": Ray reports {alive} of {len(nodes)} nodes alive, {resources}"
        if alive < len(nodes):
            said += " (a node was lost: its actors wait for resources it held)"
    except Exception:  # noqa: BLE001 - Ray's own state unreadable: the stall alone is said
        pass
    return said
