#!/usr/bin/env python3
"""Plant one hand-made violation of a Raft rule at a time and show the paper tests fail.

Each plant edits a scratch copy of ``exchange_node`` (never the working tree), runs
the paper tests against it and reports which tests failed. A plant that no test
notices is a rule without a guard: the script exits 1. See docs/mutation.md.

    python scripts/raft_plants.py [NAME ...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/raft/test_paper_figure2.py", "tests/raft/test_paper_dissertation.py"]


class Plant(NamedTuple):
    name: str
    rule: str
    file: str
    original: str
    planted: str


PLANTS = [
    Plant(
        "vote-for-older-log",
        "RequestVote receiver 2: grant only to an up-to-date log",
        "log.py",
        "return last_term > my_term or (last_term == my_term and last_index >= self.last_index())",
        "return True",
    ),
    Plant(
        "vote-twice",
        "RequestVote receiver 2: votedFor is null or candidateId",
        "core.py",
        "self.vote == m.frm\n            or (self.vote == NONE and self.leader == NONE)",
        "True\n            or (self.vote == NONE and self.leader == NONE)",
    ),
    Plant(
        "keep-vote-in-new-term",
        "All servers: term T > currentTerm -> new term, no vote yet",
        "core.py",
        "            self.term = term\n            self.vote = NONE",
        "            self.term = term",
    ),
    Plant(
        "refused-vote-resets-timer",
        "Followers: only a granted vote restarts the election timer",
        "core.py",
        "            self._send(Message(resp_type, m.frm, self.id, self.term, nonce=m.nonce, reject=True))",
        "            self.election_elapsed = 0\n"
        "            self._send(Message(resp_type, m.frm, self.id, self.term, nonce=m.nonce, reject=True))",
    ),
    Plant(
        "commit-beyond-last-new-entry",
        "AppendEntries receiver 5: commitIndex = min(leaderCommit, last new entry)",
        "log.py",
        "self.commit_to(min(leader_commit, last_new))",
        "self.commit_to(min(leader_commit, self.last_index()))",
    ),
    Plant(
        "truncate-on-retransmission",
        "AppendEntries receiver 3/4: delete only from a conflict, append only what is new",
        "log.py",
        "            conflict = self._find_conflict(entries)",
        "            conflict = entries[0].index if entries[0].index > self.commit_index else 0",
    ),
    Plant(
        "append-without-prev-match",
        "AppendEntries receiver 2: reply false when prevLogIndex/prevLogTerm do not match",
        "log.py",
        "        if not self.match_term(prev_index, prev_term):\n            return None",
        "        if self.term(prev_index) is None:\n            return None",
    ),
    Plant(
        "commit-previous-term",
        "Leaders: only entries of the current term commit by counting",
        "core.py",
        "if index <= log.commit_index or log.term(index) != self.term:",
        "if index <= log.commit_index:",
    ),
    Plant(
        "learner-ack-counts",
        "Membership: learners are in no majority",
        "core.py",
        "index = committed_index([progress[v].match_index for v in self._voter_ids])",
        "index = committed_index([pr.match_index for pr in progress.values()])",
    ),
    Plant(
        "removed-leader-stays",
        "Membership: a removed leader steps down once the removal applies",
        "core.py",
        "            if node == self.id:\n                self._step_down_removed()\n                return",
        "            if node == self.id:\n                return",
    ),
    Plant(
        "two-changes-at-once",
        "Membership: one configuration change at a time",
        "core.py",
        "if self.pending_conf_index > self.log.applying_index:",
        "if False:",
    ),
    Plant(
        "read-before-term-commit",
        "ReadIndex: a new leader first commits an entry of its term",
        "core.py",
        "        elif log.term(log.commit_index) != self.term:",
        "        elif False:",
    ),
    Plant(
        "read-without-quorum",
        "ReadIndex: heartbeat quorum confirms leadership before the answer",
        "core.py",
        "if acks is None or len(acks & self._voters) < majority(len(self._voters)):",
        "if acks is None:",
    ),
    Plant(
        "propose-during-transfer",
        "Transfer: proposals are refused while a transfer is in progress",
        "core.py",
        '        if self.lead_transferee != NONE:\n            raise ProposalDroppedError("leadership transfer in progress")\n',
        "",
    ),
    Plant(
        "transfer-never-aborts",
        "Transfer: abandoned after an election timeout",
        "core.py",
        "                # The transfer did not finish within an election timeout: give up.\n"
        "                self.lead_transferee = NONE",
        "                pass",
    ),
    Plant(
        "timeout-now-before-caught-up",
        "Transfer: TimeoutNow only once the target has the leader's log",
        "core.py",
        "        if self.progress[target].match_index == self.log.last_index():",
        "        if True:",
    ),
    Plant(
        "pre-vote-bumps-term",
        "Pre-vote: a pre-candidate does not increase its term",
        "core.py",
        "        self.role = Role.PRE_CANDIDATE\n",
        "        self.role = Role.PRE_CANDIDATE\n        self.term += 1\n",
    ),
    Plant(
        "no-lease",
        "Pre-vote / lease: no (pre-)vote while a leader was heard within the election timeout",
        "core.py",
        "                if in_lease and not forced:",
        "                if False:",
    ),
    Plant(
        "no-check-quorum",
        "Check-quorum: a leader that hears no majority steps down",
        "core.py",
        "        return active >= majority(len(self._voters))",
        "        return True",
    ),
]


def run(plant: Plant, scratch: Path) -> list[str]:
    package = scratch / "exchange_node"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(
        ROOT / "node" / "exchange_node", package, ignore=shutil.ignore_patterns("__pycache__")
    )
    target = package / "raft" / plant.file
    source = target.read_text()
    if source.count(plant.original) != 1:
        raise SystemExit(f"{plant.name}: the original text is not in raft/{plant.file} once")
    target.write_text(source.replace(plant.original, plant.planted))
    env = dict(os.environ, PYTHONPATH=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *TESTS],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    failed = [
        line.split("::", 1)[1].split(" ", 1)[0]
        for line in result.stdout.splitlines()
        if line.startswith("FAILED ")
    ]
    if not failed and result.returncode not in (0, 1):
        failed = [f"(pytest exit {result.returncode})"]
    return failed


def main() -> int:
    wanted = set(sys.argv[1:])
    unguarded = []
    with tempfile.TemporaryDirectory(prefix="raft-plants-") as tmp:
        for plant in PLANTS:
            if wanted and plant.name not in wanted:
                continue
            failed = run(plant, Path(tmp))
            print(f"{plant.name}: {plant.rule}")
            print(f"  failing tests ({len(failed)}): {', '.join(failed) or 'NONE'}")
            if not failed:
                unguarded.append(plant.name)
    if unguarded:
        print(f"\nplants no paper test noticed: {', '.join(unguarded)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
