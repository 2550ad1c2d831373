#!/usr/bin/env python3
"""Mutation testing of the consensus core (``raft/``) and of the Ready driver
(``server/driver.py``) with mutmut.

``make mutate`` runs this. It works in a scratch copy (``build/mutate/``, and
``build/mutate-driver/`` for the driver) so a long run never mutates the working tree
other tests import, and so mutmut sees the layout it expects (the package under
``src/``). Each mutant runs only the fast tests that reach the function it changes:
for raft/, ``tests/raft`` and the quick ``tests/sim`` tests; for the driver, its unit
tests (``tests/server/test_driver*.py``, ``tests/server/test_commit_notices.py``) and
a few short simulated seeds with power cuts that run it.

At the end it prints, per subject, the mutation score and every surviving mutant that
is not listed, with its reason, in ``tests/raft/equivalent_mutants.toml``
(``[[mutant]]`` for raft/, ``[[driver_mutant]]`` for the driver). The exit status is 1
when the score of the non-equivalent mutants is below ``--target`` (95 %).

    python scripts/mutate.py [--subject all|raft|driver] [--jobs N] [--target 95]
                             [--source REV] [--tests-from REV] [--report FILE] [NAME ...]

See docs/mutation.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tests" / "raft" / "equivalent_mutants.toml"
PACKAGE = "exchange_node"


@dataclass(frozen=True)
class Subject:
    """What one run mutates and which tests judge its mutants."""

    name: str
    work: Path
    """Scratch directory of its runs."""
    prefix: str
    """Module prefix of its mutants' names."""
    only_mutate: tuple[str, ...]
    """mutmut globs, relative to the package."""
    do_not_mutate: tuple[str, ...]
    tests: tuple[str, ...]
    """Test files and directories copied into the scratch copy and run."""
    left_out: tuple[str, ...]
    """Tests under ``tests`` not run per mutant (a path, or a node id with ``::``)."""
    own_tests: tuple[str, ...]
    """What ``--tests-from`` takes from another revision."""
    equivalents: str
    """The table of EQUIVALENTS that lists this subject's equivalent mutants."""


RAFT = Subject(
    name="raft",
    work=ROOT / "build" / "mutate",
    prefix=f"{PACKAGE}.raft.",
    only_mutate=("raft/*",),
    # bench.py is a tool that only happens to live in raft/ (it prints figures; nothing
    # asserts on them); __init__.py only re-exports names.
    do_not_mutate=("raft/bench.py", "raft/__init__.py"),
    tests=("tests/raft", "tests/sim"),
    left_out=(
        # Random fault schedules and simulation batches: seconds each, and mutmut's
        # trampolines make them 10-30x slower. Each mutant runs the deterministic tests
        # (about 140, 8 s in all under mutmut); the schedules are the simulator's job.
        "tests/raft/test_random_schedules.py",
        "tests/raft/test_hostile_schedules.py",
        "tests/sim/test_simulation.py",
        "tests/raft/test_election.py::test_5_2_election_safety_at_most_one_leader_per_term_under_random_partitions",
        "tests/raft/test_paper_figure2.py::test_election_safety_at_most_one_leader_is_elected_in_a_given_term",
        "tests/raft/test_paper_figure2.py::test_leader_append_only_a_leader_never_overwrites_or_deletes_entries_in_its_log",
        "tests/raft/test_paper_figure2.py::test_log_matching_entries_with_the_same_index_and_term_have_identical_prefixes",
        "tests/raft/test_paper_figure2.py::test_leader_completeness_a_committed_entry_is_in_the_log_of_every_later_leader",
        "tests/raft/test_paper_figure2.py::test_state_machine_safety_no_two_servers_apply_different_entries_at_one_index",
        # Wall-clock figures; never asserts on a rule.
        "tests/raft/test_bench.py",
        # Checks the equivalents list against the working tree's files, not raft/'s behaviour.
        "tests/raft/test_equivalent_mutants.py",
        # Planted-bug tests rewrite raft/'s source text themselves (exchange_node.sim.mutation);
        # inside mutmut's rewritten copy that text is no longer there.
        "tests/sim/test_planted_bugs.py",
        "tests/sim/test_figure8.py::test_counting_an_old_term_entry_as_committed_is_caught_by_leader_completeness",
    ),
    own_tests=("tests/raft",),
    equivalents="mutant",
)

DRIVER = Subject(
    name="driver",
    work=ROOT / "build" / "mutate-driver",
    prefix=f"{PACKAGE}.server.driver.",
    only_mutate=("server/driver.py",),
    do_not_mutate=(),
    # The driver's unit tests (tests/server/test_driver.py, one rule each, and
    # test_commit_notices.py for rule 5), the short simulated seeds with power cuts
    # that run the real driver (test_driver_simulated.py: about 5 s) and figure 8
    # in the simulator. All deterministic; the big simulation batches are left out.
    tests=(
        "tests/server/test_driver.py",
        "tests/server/test_driver_details.py",
        "tests/server/test_driver_simulated.py",
        "tests/server/test_commit_notices.py",
        "tests/sim/test_figure8.py",
    ),
    left_out=(
        # Plants a core bug by rewriting raft/'s source text: not about the driver.
        "tests/sim/test_figure8.py::test_counting_an_old_term_entry_as_committed_is_caught_by_leader_completeness",
        # Planted driver bugs (test_driver_mutants.py, and the planted-bug check of
        # test_driver_simulated.py) rewrite driver.py's source text, which is no longer
        # there in mutmut's copy.
        "tests/server/test_driver_simulated.py::test_the_seeds_catch_every_planted_driver_bug",
    ),
    own_tests=(
        "tests/server/test_driver.py",
        "tests/server/test_driver_details.py",
        "tests/server/test_driver_simulated.py",
    ),
    equivalents="driver_mutant",
)

SUBJECTS = {s.name: s for s in (RAFT, DRIVER)}


def selection(subject: Subject) -> list[str]:
    """pytest arguments choosing the tests each mutant may run."""
    args = list(subject.tests)
    for test in subject.left_out:
        args += ["--deselect", test] if "::" in test else ["--ignore", test]
    return args


DETECTED = {"killed", "timeout", "segfault", "suspicious", "caught by type check"}
"""A mutant the tests noticed: they failed, hung or crashed."""


@dataclass(frozen=True)
class Equivalent:
    file: str
    function: str
    original: str
    mutated: str
    reason: str


def normalise(code: str) -> str:
    return " ".join(code.split())


def load_equivalents(path: Path = EQUIVALENTS, table: str = "mutant") -> list[Equivalent]:
    data = tomllib.loads(path.read_text())
    return [
        Equivalent(
            m["file"], m["function"], normalise(m["original"]), normalise(m["mutated"]), m["reason"]
        )
        for m in data.get(table, [])
    ]


def function_of(mutant: str) -> tuple[str, str]:
    """``exchange_node.raft.core.xǁRaftCoreǁ_step__mutmut_3`` -> ("core.py", "RaftCore._step")."""
    module, _, name = mutant.rpartition(".")
    name = re.sub(r"__mutmut_\d+$", "", name)
    if name.startswith("xǁ"):
        name = ".".join(part for part in name[2:].split("ǁ") if part)
    elif name.startswith("x_"):
        name = name[2:]
    return module.rpartition(".")[2] + ".py", name


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and the added code of a mutant's unified diff, whitespace-normalised."""
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return normalise(" / ".join(removed)), normalise(" / ".join(added))


def only_an_assertion_message(original: str, mutated: str) -> bool:
    """The mutant changes nothing but the message of an ``assert``: the condition, which
    is what the program checks, is the same; the text is read only by a person."""
    try:
        before, after = ast.parse(original.strip()), ast.parse(mutated.strip())
    except SyntaxError:
        return False
    if len(before.body) != 1 or len(after.body) != 1:
        return False
    a, b = before.body[0], after.body[0]
    return (
        isinstance(a, ast.Assert)
        and isinstance(b, ast.Assert)
        and ast.dump(a.test) == ast.dump(b.test)
        and ast.dump(a) != ast.dump(b)
    )


def _extract(rev: str, paths: list[str], into: Path) -> None:
    """``paths`` as they are at git revision ``rev``, written under ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, *paths], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _at_revision(rev: str, paths: tuple[str, ...]) -> list[str]:
    """The ones of ``paths`` that exist at revision ``rev``."""
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [p for p in paths if any(f == p or f.startswith(p.rstrip("/") + "/") for f in listed)]


def prepare(subject: Subject, work: Path, tests_from: str | None, source: str | None) -> None:
    shutil.rmtree(work, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if source:
        # The package as committed at ``source`` (other sessions' unfinished edits in
        # the working tree stay out of the run).
        (work / "src").mkdir(parents=True)
        _extract(source, [f"node/{PACKAGE}"], work / "src")
        (work / "src" / "node" / PACKAGE).rename(work / "src" / PACKAGE)
        (work / "src" / "node").rmdir()
    else:
        shutil.copytree(ROOT / "node" / PACKAGE, work / "src" / PACKAGE, ignore=ignore)
    for tests in subject.tests:
        if (ROOT / tests).is_dir():
            shutil.copytree(ROOT / tests, work / tests, ignore=ignore)
        elif (ROOT / tests).is_file():
            (work / tests).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / tests, work / tests)
    if tests_from:
        # The subject's own tests of another commit (e.g. to score the suite before new
        # tests); the other tests stay those of the working tree.
        for own in subject.own_tests:
            path = work / own
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        present = _at_revision(tests_from, subject.own_tests)
        if present:
            _extract(tests_from, present, work)
    tests = [t for t in subject.tests if (work / t).exists()]
    left_out = [t for t in subject.left_out if (work / t.partition("::")[0]).exists()]
    chosen = selection(replace(subject, tests=tuple(tests), left_out=tuple(left_out)))
    only = [f"src/{PACKAGE}/{glob}" for glob in subject.only_mutate]
    skip = [f"src/{PACKAGE}/{name}" for name in subject.do_not_mutate]
    (work / "pyproject.toml").write_text(
        "# Written by scripts/mutate.py for one run; edit that script instead.\n"
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {only!r}\n"
        f"do_not_mutate = {skip!r}\n"
        f"pytest_add_cli_args_test_selection = {chosen!r}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
        "\n[tool.pytest.ini_options]\n"
        'addopts = "--import-mode=importlib"\n'
        "timeout = 600\n"
        'asyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
        'markers = ["slow: long-running", "soak: only in make soak"]\n'
    )


def mutmut(work: Path, *args: str, capture: bool = False) -> str:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=work,
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed with status {result.returncode}")
    return result.stdout or ""


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
diffs = {}
for name in json.load(sys.stdin):
    try:
        diffs[name] = get_diff_for_mutant(name)
    except Exception:
        diffs[name] = None
print(json.dumps(diffs))
"""


def diffs_of(work: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's diff, in one process (``mutmut show`` per mutant takes a second each);
    falls back to ``mutmut show`` where mutmut's internals have moved."""
    result = subprocess.run(
        [sys.executable, "-c", DIFFS],
        cwd=work,
        input=json.dumps(names),
        text=True,
        capture_output=True,
        check=False,
    )
    found: dict[str, str | None] = json.loads(result.stdout) if result.returncode == 0 else {}
    return {name: found.get(name) or mutmut(work, "show", name, capture=True) for name in names}


@dataclass
class Outcome:
    subject: str
    score: float
    report: str


def run(subject: Subject, args: argparse.Namespace, names: list[str]) -> Outcome:
    """Mutate ``subject``, run its tests against each mutant and write its report."""
    work = (args.work or subject.work).resolve()
    report_path = args.report or work / "report.txt"
    started = time.monotonic()
    if not (args.resume and (work / "mutants").exists()):
        prepare(subject, work, args.tests_from, args.source)
    mutmut(work, "run", "--max-children", str(args.jobs), *names)
    elapsed = time.monotonic() - started

    statuses: dict[str, str] = {}
    for line in mutmut(work, "results", "--all", "true", capture=True).splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith(subject.prefix) and status != "not checked":
            # "not checked": left out by a name filter on the command line.
            statuses[name] = status

    listed = load_equivalents(EQUIVALENTS, subject.equivalents)
    equivalents = {(e.file, e.function, e.original, e.mutated): e for e in listed}
    used: set[tuple[str, str, str, str]] = set()
    survivors: list[tuple[str, str, str]] = []
    equivalent_count = 0
    assertion_messages = 0
    undetected = sorted(name for name, status in statuses.items() if status not in DETECTED)
    diffs = diffs_of(work, undetected)
    for name in undetected:
        status, diff = statuses[name], diffs[name]
        key = (*function_of(name), *changed_lines(diff))
        if only_an_assertion_message(key[2], key[3]):
            assertion_messages += 1
            continue
        if key in equivalents:
            used.add(key)
            equivalent_count += 1
            continue
        survivors.append((name, status, diff))

    total = len(statuses)
    detected = sum(1 for s in statuses.values() if s in DETECTED)
    scored = total - equivalent_count - assertion_messages
    score = 100.0 * detected / scored if scored else 100.0
    lines = [
        f"[{subject.name}] mutants: {total}  detected: {detected}  equivalent:"
        f" {equivalent_count} listed + {assertion_messages} assertion messages"
        f"  surviving: {len(survivors)}",
        f"mutation score (detected / non-equivalent): {score:.2f}%  (target {args.target}%)",
        f"run time: {elapsed:.0f} s with {args.jobs} jobs",
    ]
    by_status: dict[str, int] = {}
    for s in statuses.values():
        by_status[s] = by_status.get(s, 0) + 1
    lines.append("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    unused = [e for k, e in equivalents.items() if k not in used]
    if unused and not names:
        lines.append(f"listed equivalents not produced by this run: {len(unused)}")
        lines += [f"  {e.file} {e.function}: {e.original} -> {e.mutated}" for e in unused]
    if survivors:
        lines.append("\nsurviving mutants (kill them with a test or list them, with the reason,")
        lines.append(f"in {EQUIVALENTS.relative_to(ROOT)} under [[{subject.equivalents}]]):")
        for name, status, diff in survivors:
            file, function = function_of(name)
            original, mutated = changed_lines(diff)
            lines.append(f"\n## {name} [{status}] {file} {function}")
            lines.append(f"   original: {original}\n   mutated:  {mutated}")
    report = "\n".join(lines)
    print("\n" + report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report + "\n")
    return Outcome(subject.name, score, report)


def subject_of(name: str) -> str:
    """The subject a mutant name (or glob) belongs to: only the driver's names (its module
    is ``exchange_node.server.driver``) say "driver"; no module of raft/ does."""
    return "driver" if "driver" in name else "raft"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subject",
        choices=["all", *SUBJECTS],
        default="all",
        help="what to mutate: raft/, server/driver.py or both (default; raft/ first)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--target", type=float, default=95.0, help="minimum score, percent")
    parser.add_argument(
        "--resume", action="store_true", help="keep the scratch copy and its finished mutants"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="default: WORK/report.txt (one subject only)"
    )
    parser.add_argument(
        "--tests-from", metavar="REV", help="take the subject's own tests from this git revision"
    )
    parser.add_argument(
        "--source",
        metavar="REV",
        help="mutate the package as committed at this git revision (default: working tree)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch directory (one subject only; default build/mutate, build/mutate-driver)",
    )
    parser.add_argument(
        "mutants", nargs="*", help="only these mutant names (globs), e.g. '*core*_step*'"
    )
    args = parser.parse_args()

    chosen = list(SUBJECTS) if args.subject == "all" else [args.subject]
    if args.mutants and args.subject == "all":
        chosen = [s for s in SUBJECTS if any(subject_of(n) == s for n in args.mutants)]
    if len(chosen) > 1 and (args.work or args.report):
        parser.error("--work and --report name one subject's files: add --subject")
    outcomes = []
    for name in chosen:
        subject = SUBJECTS[name]
        names = [n for n in args.mutants if args.subject != "all" or subject_of(n) == name]
        outcomes.append(run(subject, args, names))
    if len(outcomes) > 1:
        print("\n" + "  ".join(f"{o.subject}: {o.score:.2f}%" for o in outcomes))
    below = [o for o in outcomes if o.score < args.target]
    return 1 if below and not args.mutants else 0


if __name__ == "__main__":
    sys.exit(main())
