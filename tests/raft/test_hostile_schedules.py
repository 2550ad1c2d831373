"""Random fault schedules with a forger injecting frames at every step.

The forger is as strong as an attacker on the network without peer TLS can be
while the rules of raft/README.md ("Hostile inputs", "Nonces") are meant to hold:
it knows every member id, term and log index, injects anything in any name, but
cannot read the members' streams, so it guesses nonces. What it does not send are
appends in a member's name in a term whose leader the receiver has not heard yet:
following a new leader is Raft, and only peer TLS can stop that one (README); nor
appends from strangers, which the node's shell drops before the core (a node
replaying its log from an old configuration cannot judge them; tests/security). Safety is checked after every step
(ChaosNet.check), no forged entry may ever apply, and after the faults and the
forger stop, a proposal must commit on every voter.
"""

from __future__ import annotations

import random

import pytest
from exchange_node.raft import Entry, Message, MessageType, Role
from exchange_node.raft.core import TRANSFER_CONTEXT
from exchange_node.raft.types import MAX_TERM
from test_random_schedules import ChaosNet, heal_and_commit, run_schedule

FORGED = b"FORGED"
STRANGER = 99


def forgeries(net: ChaosNet, rng: random.Random) -> list[Message]:
    cores = net.cores
    ids = list(cores)
    to = rng.choice(ids)
    core = cores[to]
    term, last = core.term, core.log.last_index()
    member = rng.choice([i for i in ids if i != to] or [STRANGER])
    leader = core.leader or member
    guess = rng.choice([0, 1, rng.randrange(1, 1 << 62)])
    in_leaders_name: list[Message] = []
    if core.role is Role.FOLLOWER and core.leader:
        # An append in the name of the leader we follow, in its term, nonce guessed.
        in_leaders_name.append(
            Message(
                MessageType.APP,
                to,
                core.leader,
                term,
                log_term=core.log.last_term(),
                index=last,
                entries=[Entry(term, last + 1, FORGED)],
                commit=last + 1,
                nonce=guess,
            )
        )
    return [
        *in_leaders_name,
        # Acknowledgements and votes in members' names, now and one term ahead.
        Message(MessageType.APP_RESP, to, member, term, nonce=guess, index=last),
        Message(MessageType.APP_RESP, to, member, term + 1, nonce=guess, reject=True),
        Message(MessageType.HEARTBEAT_RESP, to, member, term, nonce=guess, commit=last),
        Message(MessageType.VOTE_RESP, to, member, term, nonce=guess),
        Message(MessageType.PRE_VOTE_RESP, to, member, term + 1, nonce=guess),
        # Elections on command.
        Message(MessageType.TIMEOUT_NOW, to, leader, term, index=to, nonce=guess),
        Message(MessageType.TIMEOUT_NOW, to, leader, term, index=member, nonce=guess),
        Message(
            MessageType.VOTE,
            to,
            member,
            term + 1,
            log_term=term,
            index=last,
            context=TRANSFER_CONTEXT,
        ),
        Message(MessageType.TRANSFER_LEADER, to, member, term, index=member, nonce=guess),
        Message(MessageType.READ_INDEX_RESP, to, leader, term, index=last, nonce=guess),
        # Terms no honest cluster reaches.
        Message(MessageType.HEARTBEAT, to, member, MAX_TERM),
        # A stranger's answers and votes (its appends are the shell's to drop).
        Message(MessageType.APP_RESP, to, STRANGER, term + 1, nonce=guess),
        Message(MessageType.VOTE, to, STRANGER, term + 1, log_term=term, index=last),
    ]


def check_commits_are_stored_on_a_majority(net: ChaosNet) -> None:
    """What a leader counts as committed in its term is really held by a majority of
    its voters (a forged acknowledgement would commit an entry nobody else has)."""
    for leader in net.cores.values():
        if leader.role is not Role.LEADER:
            continue
        index = leader.commit_index
        if leader.log.term(index) != leader.term:
            continue
        voters = leader.conf_state.voters
        holding = [
            v
            for v in voters
            if v in net.cores
            and (
                net.cores[v].log.term(index) == leader.term
                or (index <= net.cores[v].log.offset and net.cores[v].term >= leader.term)
            )
        ]
        assert len(holding) > len(voters) // 2, f"commit {index} held only by {holding}"


def run_hostile_schedule(seed: int, nodes: int, steps: int) -> tuple[ChaosNet, int]:
    rng = random.Random(seed ^ 0xBAD)
    injected = 0

    def inject(net: ChaosNet) -> None:
        nonlocal injected
        for m in rng.sample(forgeries(net, rng), 3):
            net.cores[m.to].step(m)
            net.process(m.to)
            injected += 1
        check_commits_are_stored_on_a_majority(net)

    net = run_schedule(seed, nodes, steps, after_step=inject)
    return net, injected


@pytest.mark.parametrize("nodes", [3, 5])
def test_forged_frames_in_random_fault_schedules_break_neither_safety_nor_liveness(nodes: int):
    for seed in range(12):
        net, injected = run_hostile_schedule(seed, nodes, 300)
        assert injected == 900
        heal_and_commit(net, seed)
        for i in net.cores:
            assert all(e.data != FORGED for e in net.applied[i]), f"seed {seed}: forged entry"
        assert FORGED not in {data for _, data in net.committed.values()}
        leaders = [c for c in net.cores.values() if c.role is Role.LEADER]
        assert all(c.term < 1_000 for c in leaders), f"seed {seed}: terms ran away"
