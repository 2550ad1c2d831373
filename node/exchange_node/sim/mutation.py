"""Planted bugs: a copy of the consensus core with a textual mutation applied.

The simulator is only worth trusting if it catches a broken core. This
module imports a fresh copy of the ``exchange_node.raft`` package under
another name, with chosen source lines replaced, so tests (and
``exchange sim --plant BUG``) can check that each known Raft bug is
reported within a bounded number of seeds. The original package is never
touched; the copy shares only the value types (``types.py``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import exchange_node.raft as _raft
import exchange_node.raft.types as _raft_types

RAFT_DIR = Path(_raft.__file__).parent
DRIVER = "driver"
DRIVER_FILE = RAFT_DIR.parent / "server" / "driver.py"
SIM_DISK = "sim-disk"
SIM_DISK_FILE = Path(__file__).parent / "disk.py"
SINGLE_FILES = {DRIVER: DRIVER_FILE, SIM_DISK: SIM_DISK_FILE}
"""Planted bugs outside the core: one module each, copied alone."""


@dataclass(frozen=True)
class PlantedBug:
    name: str
    description: str
    module: str
    """The core module to mutate (file name without .py), ``DRIVER`` for the
    node's Ready driver (``server/driver.py``), or ``SIM_DISK`` for the simulated
    disk's recovery (``sim/disk.py``)."""
    replacements: tuple[tuple[str, str], ...]
    """(original source text, replacement); each original must occur exactly once."""


PLANTED_BUGS: dict[str, PlantedBug] = {
    bug.name: bug
    for bug in (
        PlantedBug(
            "commit-previous-term",
            "a leader commits an entry of an earlier term by counting replicas (figure 8)",
            "core",
            (
                (
                    "if index <= log.commit_index or log.term(index) != self.term:",
                    "if index <= log.commit_index:",
                ),
            ),
        ),
        PlantedBug(
            "forget-vote",
            "the vote is never persisted in the hard state, so a restarted node votes again",
            "core",
            (
                (
                    "hard = HardState(self.term, self.vote, log.commit_index)",
                    "hard = HardState(self.term, NONE, log.commit_index)",
                ),
                (
                    "self._prev_hard_state != (self.term, self.vote, log.commit_index)",
                    "self._prev_hard_state != (self.term, NONE, log.commit_index)",
                ),
            ),
        ),
        PlantedBug(
            "vote-for-shorter-log",
            "a voter grants its vote to a candidate whose log is shorter (same last term)",
            "log",
            (
                (
                    "return last_term > my_term or (last_term == my_term and last_index >= self.last_index())",
                    "return last_term >= my_term",
                ),
            ),
        ),
        PlantedBug(
            "vote-for-older-log",
            "a voter compares only log lengths, granting its vote to a log with an older last term",
            "log",
            (
                (
                    "return last_term > my_term or (last_term == my_term and last_index >= self.last_index())",
                    "return last_index >= self.last_index()",
                ),
            ),
        ),
        PlantedBug(
            "lease-lost-with-any-peer",
            "a follower told that any peer's process is gone (not only its leader's) "
            "forgets its leader's lease and grants votes while it still hears the leader",
            "core",
            (
                (
                    "if self.role is not Role.FOLLOWER or peer == NONE or peer != self.leader:",
                    "if self.role is not Role.FOLLOWER or peer == NONE:",
                ),
            ),
        ),
        PlantedBug(
            "never-campaign",
            "a follower whose election timer fires never campaigns (a liveness bug)",
            "core",
            (
                (
                    "if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:",
                    "if False:",
                ),
            ),
        ),
        PlantedBug(
            "lost-snapshot-stalls",
            "a leader ignores the report that a snapshot was lost (and has no timeout "
            "for it), so that follower stalls",
            "core",
            (
                (
                    "if pr is None or pr.state is not _SNAPSHOT:\n            return\n        if not success:",
                    "if pr is None or pr.state is not _SNAPSHOT or not success:\n            return\n        if not success:",
                ),
                ("if pr.snapshot_rounds >= 2:", "if False:"),
            ),
        ),
        PlantedBug(
            "read-before-term-commit",
            "a new leader answers ReadIndex before an entry of its term commits, so its "
            "commit index may lag what is already committed (stale read)",
            "core",
            (("elif log.term(log.commit_index) != self.term:", "elif False:"),),
        ),
        PlantedBug(
            "read-without-quorum",
            "a leader answers ReadIndex at once, without a heartbeat round proving it still leads",
            "core",
            (
                (
                    "elif self.read_only.add(log.commit_index, requester, ctx, self.id):\n            self._bcast_heartbeat(ctx)",
                    "else:\n            self._answer_read(ReadRequest(log.commit_index, requester, ctx))",
                ),
            ),
        ),
        # -- the driver's orderings (server/driver.py): each rule it relies on, broken
        PlantedBug(
            "follower-acks-before-fsync",
            "a follower sends its acknowledgement before the entries it acknowledges are "
            "durable (the leader's early send applied to every role)",
            DRIVER,
            (
                (
                    "            leader\n            and rd.messages\n            and rd.entries\n",
                    "            rd.messages\n            and rd.entries\n",
                ),
            ),
        ),
        PlantedBug(
            "vote-before-fsync",
            "every message leaves before the local write, a vote before the durable vote",
            DRIVER,
            (
                (
                    "            leader\n            and rd.messages\n            and rd.entries\n"
                    "            and (hs is None or (hs.term, hs.vote) == persisted)\n",
                    "            rd.messages\n",
                ),
            ),
        ),
        PlantedBug(
            "defer-vote",
            "a hard state without new entries is never written on its own, a new term "
            "or vote included (the commit-only deferral applied to every hard state)",
            DRIVER,
            (
                (
                    "if not rd.entries and rd.snapshot is None and (hs.term, hs.vote) == persisted:",
                    "if not rd.entries and rd.snapshot is None:",
                ),
            ),
        ),
        PlantedBug(
            "read-before-applied",
            "a read is answered as soon as its read index is known, before this replica "
            "applied up to it",
            DRIVER,
            (("            if req.index <= applied:", "            if True:"),),
        ),
        PlantedBug(
            "answer-replaced-entry",
            "a request is answered with whatever entry committed at its index, even one "
            "of another term (another leader's)",
            DRIVER,
            (
                (
                    "                    if waiter.term == entry.term:",
                    "                    if True:",
                ),
            ),
        ),
        PlantedBug(
            "heartbeat-commit-beyond-match",
            "a leader's heartbeat tells a follower to commit beyond what it is known to hold",
            "core",
            (("commit=min(pr.match_index, commit),", "commit=commit,"),),
        ),
        # -- recovery's verdict (what the node's shell acts on)
        PlantedBug(
            "lost-tail-as-torn",
            "recovery takes a lost acknowledged tail for a torn, never-acknowledged write "
            "(the behaviour before protocol-aware recovery): the node votes at once",
            SIM_DISK,
            (
                (
                    "            return RecoveryVerdict(\n                VerdictKind.LOST,",
                    "            return RecoveryVerdict(\n                VerdictKind.TORN,",
                ),
            ),
        ),
    )
}


class MutationError(Exception):
    """The text a planted bug replaces is no longer in the core: update the bug."""


class _MutantLoader(importlib.abc.Loader):
    def __init__(self, filename: Path, replacements: tuple[tuple[str, str], ...]) -> None:
        self.filename = filename
        self.replacements = replacements

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        source = self.filename.read_text()
        for original, replacement in self.replacements:
            found = source.count(original)
            if found != 1:
                raise MutationError(
                    f"{self.filename.name}: expected the text {original!r} exactly once, "
                    f"found it {found} times"
                )
            source = source.replace(original, replacement)
        exec(compile(source, str(self.filename), "exec"), module.__dict__)


class _MutantFinder(importlib.abc.MetaPathFinder):
    def __init__(self, package: str, bug: PlantedBug) -> None:
        self.package = package
        self.bug = bug

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package:
            filename = RAFT_DIR / "__init__.py"
            module = "__init__"
        elif fullname.startswith(self.package + "."):
            module = fullname[len(self.package) + 1 :]
            filename = RAFT_DIR / f"{module}.py"
            if not filename.exists():
                return None
        else:
            return None
        replacements = self.bug.replacements if module == self.bug.module else ()
        loader = _MutantLoader(filename, replacements)
        return importlib.util.spec_from_file_location(
            fullname,
            filename,
            loader=loader,
            submodule_search_locations=[str(RAFT_DIR)] if module == "__init__" else None,
        )


def load_mutant(bug_name: str) -> str:
    """Import a copy of the core (or of the driver, or of the simulated disk) with
    ``bug_name`` planted; returns its package (module) name. A driver copy is one
    module with a ``Driver`` class, a disk copy one with a ``SimStorage`` class.

    The package stays in ``sys.modules``, so forked simulation workers can
    import it by that name.
    """
    bug = PLANTED_BUGS[bug_name]
    package = "exchange_node_mutant_" + bug_name.replace("-", "_")
    single = SINGLE_FILES.get(bug.module)
    if single is not None:
        if package not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                package, single, loader=_MutantLoader(single, bug.replacements)
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[package] = module
            spec.loader.exec_module(module)
        return package
    if package not in sys.modules:
        sys.modules[package + ".types"] = _raft_types
        sys.meta_path.insert(0, _MutantFinder(package, bug))
        importlib.import_module(package)
    return package


def run_seed_kwargs(module: ModuleType | None) -> dict[str, ModuleType]:
    """How ``run_seed`` takes a (mutant) module: as the core, the driver or the disk."""
    if module is None:
        return {}
    if hasattr(module, "Driver"):
        return {"driver": module}
    if hasattr(module, "SimStorage"):
        return {"disk": module}
    return {"raft": module}
