"""Waiting requests: client proposals, admin configuration changes and read barriers.

A request is queued (proposals fairly per client, ``server/fairqueue.py``), handed
to the driver, and answered by it (``driver.Replies``). ``Requests`` turns the
driver's answers into futures' results or errors, metrics and span ends, and
counts the commands in flight (the back-pressure limit of ``submit``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from exchange_node.engine.events import CommandResult
from exchange_node.server.driver import Failure
from exchange_node.server.metrics import NodeMetrics
from exchange_node.service import Timeout, Unavailable


@dataclass(slots=True)
class Proposal:
    """A client request: queued, then waiting on its log entry."""

    commands: Sequence[Any]
    future: asyncio.Future[list[Any]]
    deadline: float
    started: float
    span: Any = None


Token = Proposal | asyncio.Future[None]
"""What waits in the driver: a proposal, or an admin change's or a read's future."""


class Requests:
    """The driver's ``Replies`` for the node (see the module docstring)."""

    def __init__(self, metrics: NodeMetrics, not_leader: Callable[[], Exception]) -> None:
        self.metrics = metrics
        self.not_leader = not_leader
        self.pending_commands = 0
        """Commands queued or waiting on the log."""

    # -- the driver's Replies ----------------------------------------------------

    def resolved(self, token: Token, index: int, result: list[CommandResult] | None) -> None:
        """A request's entry applied at the term it was proposed in."""
        if not isinstance(token, Proposal):
            if not token.done():
                token.set_result(None)
            return
        if result is None:  # an unreadable entry: the request's outcome is lost
            self.failed(token, Failure.LOST, "")
            return
        self.pending_commands -= len(token.commands)
        self.metrics.proposals.labels(outcome="committed").inc()
        self.metrics.commit_latency.observe(time.monotonic() - token.started)
        if token.span is not None:
            token.span.add_event("committed", {"exchange.log_index": index})
            token.span.end()
        if not token.future.done():
            token.future.set_result(result)

    def failed(self, token: Token, failure: Failure, detail: str) -> None:
        """A waiting request gets its error (see ``driver.Failure``)."""
        if isinstance(token, Proposal):
            error, outcome = self.proposal_error(failure, detail)
            if failure is Failure.NOT_LEADER:
                self.finish_early(token, error, "not_leader")
                return
            self.pending_commands -= len(token.commands)
            if outcome == "dropped":
                self.metrics.proposals.labels(outcome="dropped").inc()
            if token.span is not None:
                token.span.set_attribute("exchange.outcome", outcome)
                token.span.end()
            if not token.future.done():
                token.future.set_exception(error)
        elif not token.done():
            token.set_exception(self.other_error(failure, detail))

    def read_ready(self, token: Token, index: int) -> None:
        if isinstance(token, asyncio.Future) and not token.done():
            token.set_result(None)

    # -- errors ------------------------------------------------------------------

    def finish_early(self, p: Proposal, error: Exception, outcome: str) -> None:
        """A proposal that never reached the log (not the leader, stopping, dropped)."""
        self.pending_commands -= len(p.commands)
        self.metrics.proposals.labels(outcome=outcome).inc()
        if p.span is not None:
            p.span.set_attribute("exchange.outcome", outcome)
            p.span.end()
        if not p.future.done():
            p.future.set_exception(error)

    def proposal_error(self, failure: Failure, detail: str) -> tuple[Exception, str]:
        """(error, metrics outcome) of a client proposal."""
        if failure is Failure.NOT_LEADER:
            return self.not_leader(), "not_leader"
        if failure is Failure.DROPPED:
            return Unavailable(detail), "dropped"
        if failure is Failure.REPLACED:
            return Unavailable("its log entry was replaced; retry"), "dropped"
        if failure is Failure.LOST:
            error = Unavailable("leadership changed before the order was committed; retry")
            return error, "dropped"
        if failure is Failure.TIMEOUT:
            return Timeout("not applied in time; outcome unknown"), "timeout"
        if failure is Failure.SNAPSHOT:
            return Timeout("outcome unknown after a snapshot install"), "unknown"
        return Timeout("node stopped; outcome unknown"), "unknown"

    def other_error(self, failure: Failure, detail: str) -> Exception:
        """The error of an admin change or a read barrier."""
        if failure is Failure.NOT_LEADER:
            return self.not_leader()
        if failure is Failure.DROPPED:
            return Unavailable(detail)
        if failure is Failure.REPLACED:
            return Unavailable("its log entry was replaced; retry")
        if failure is Failure.LOST:
            return Unavailable("the configuration change was replaced by a newer leader; retry")
        if failure is Failure.TIMEOUT:
            return Timeout(detail)
        if failure is Failure.SNAPSHOT:
            return Timeout("outcome unknown after a snapshot install")
        return Unavailable("node is shutting down")
