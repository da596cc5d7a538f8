"""How ``eval --ray`` asks Ray for resources (``distributed._placement``): the model actors and the decoders fit
the cluster, and after losing any one node but the head, where the model actors and a decoder fit on what is
left, all of them do (so Ray can restart what the node held), checked by placing them every way there is."""
import itertools
import random
import re
from types import SimpleNamespace

import pytest

from attnlens.evaluation.distributed import RayError, _placement

HEAD = "node:__internal_head__"


class Cluster:
    """What ``_placement`` reads of Ray: its nodes' resources."""

    def __init__(self, *nodes: dict):
        self._nodes = [{"Alive": True, "Resources": resources} for resources in nodes]

    def nodes(self):
        return self._nodes


def fits(nodes: list[dict], plan, decoders: int) -> bool:
    """Whether the plan's model actors and ``decoders`` decoders fit ``nodes``: every placement of the actors
    tried, the decoders (all alike) then counted into what each node has left."""
    cpus, gpus = plan.resources["num_cpus"], plan.resources.get("num_gpus", 0)
    for places in itertools.product(range(len(nodes)), repeat=plan.actors):
        left = [[node.get("CPU", 0), node.get("GPU", 0)] for node in nodes]
        for place in places:
            left[place][0] -= cpus
            left[place][1] -= gpus
        if all(cpu >= -1e-9 and gpu >= 0 for cpu, gpu in left) and \
                sum(int(cpu / plan.decode_cpus + 1e-9) for cpu, _ in left) >= decoders:
            return True
    return False


@pytest.mark.parametrize("nodes, actors, threads, cpus, decoders, decode_cpus", [
    ([{"CPU": 1, HEAD: 1}, {"CPU": 2}], None, 1, 0.5, 1, 0.5),  # the head's one CPU holds both halves after a loss
    ([{"CPU": 2, HEAD: 1}, {"CPU": 2}], None, 2, 1, 1, 1.0),  # not 3 decoders: one node's 2 CPUs hold 1 + 1
    ([{"CPU": 8, HEAD: 1}, {"CPU": 8}], None, 8, 7, 1, 1.0),
    ([{"CPU": 4, HEAD: 1}, {"CPU": 8}, {"CPU": 8}], None, 4, 3, 9, 1.0),  # 4 + 8 left: 3 for the actor, 9
    ([{"CPU": 8, HEAD: 1}, {"CPU": 8}], 2, 8, 7, 2, 1.0),  # no loss recoverable (7 + 7 > 8): the whole 16 less 14
    ([{"CPU": 2, HEAD: 1}], None, 2, 1, 1, 1.0),  # one node: nothing to lose
    ([{"CPU": 1, HEAD: 1}], None, 1, 0.5, 1, 0.5),  # a one-CPU machine: the actor and a decoder share it
    ([{"CPU": 32, "GPU": 8, HEAD: 1}, {"CPU": 32, "GPU": 8}], None, 4, 1, 48, 1.0),  # 16 GPU actors: none spare
    ([{"CPU": 32, "GPU": 8, HEAD: 1}, {"CPU": 32, "GPU": 8}], 1, 32, 1, 31, 1.0),  # one: the other node's 8 GPUs
])
def test_the_plan_for_clusters_worked_by_hand(nodes, actors, threads, cpus, decoders, decode_cpus):
    plan = _placement(Cluster(*nodes), actors, local=False)
    assert (plan.threads, plan.resources["num_cpus"], plan.decoders, plan.decode_cpus) == \
        (threads, cpus, decoders, decode_cpus)


def test_a_lost_node_leaves_room_for_what_it_held_where_the_cluster_allows():
    chance = random.Random(7)
    recoverable = refused = 0
    for _ in range(400):
        nodes = [{"CPU": chance.randint(1, 8), HEAD: 1}] + [{"CPU": chance.randint(1, 8)}
                                                            for _ in range(chance.randint(0, 2))]
        if chance.random() < 0.3:
            for node in nodes:
                node["GPU"] = chance.randint(0, 2)
        actors = chance.choice([None, 1, 2, 3])
        try:
            plan = _placement(Cluster(*nodes), actors, local=False)
        except RayError as error:  # said only where no placement holds the actors asking that, and a decoder
            asked = re.search(r"cannot hold (\d+) model actors asking ([\d.]+) CPUs?( and a GPU)?", str(error))
            assert asked, error
            alike = SimpleNamespace(actors=int(asked[1]), decode_cpus=0.01,
                                    resources={"num_cpus": float(asked[2]), "num_gpus": 1 if asked[3] else 0})
            assert not fits(nodes, alike, 1), (nodes, actors, error)
            if most := re.search(r"--ray-actors (\d+) at most", str(error)):  # the fewer it says do fit
                fewer = _placement(Cluster(*nodes), int(most[1]), local=False)
                assert fits(nodes, fewer, fewer.decoders)
            refused += 1
            continue
        assert fits(nodes, plan, plan.decoders), (nodes, plan)  # the run itself
        assert plan.decoders >= 1 and 0 < plan.decode_cpus <= 1
        for lost in range(1, len(nodes)):
            left = nodes[:lost] + nodes[lost + 1:]
            if fits(left, plan, 1):  # the model actors and a decoder can come back: all the decoders can
                recoverable += 1
                assert fits(left, plan, plan.decoders), (nodes, lost, plan)
    assert recoverable > 50 and 0 < refused < 100
