"""``GET /v1/cluster/members``: every member's own view, gathered by this node.

A browser behind ``kubectl port-forward``, an ingress or HTTPS can reach only
the node it talks to, never the pods' DNS names. So the node asks each member's
public ``/v1/cluster`` itself, server-side, and answers with all of them:

* each fetch has a short timeout (``member_status_timeout_seconds``); a member
  that does not answer in time is listed ``reachable: false`` with the reason;
* at most ``API_MAX_MEMBERS_ASKED`` members are asked, all at once;
* answers are shared for ``member_status_cache_seconds``: any number of pages
  polling any number of times cause at most one round of fetches per interval
  (concurrent callers wait for the same round).

The fetched routes are public and read-only; the peers' HTTP addresses are the
ones the cluster's configuration holds (never from the request), and the
scheme is this request's (members of one cluster serve alike). Over HTTPS the
certificate is verified against the system store and ``member_status_ca_file``
(the node's ``--peer-tls-ca`` when it serves HTTPS), unless
``member_status_verify_tls`` is off.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from exchange_node.limits import API_MAX_MEMBER_ANSWER_BYTES, API_MAX_MEMBERS_ASKED

from . import queries


class MemberStatusFetcher:
    def __init__(
        self,
        status: Callable[[], Any],
        *,
        timeout_seconds: float,
        cache_seconds: float,
        verify_tls: bool = True,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self.timeout_seconds = timeout_seconds
        self.cache_seconds = cache_seconds
        self.verify_tls = verify_tls
        self.ca_file = ca_file
        self._ssl: ssl.SSLContext | bool | None = None
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._cached: tuple[float, str, dict[str, Any]] | None = None
        self._round: asyncio.Task[dict[str, Any]] | None = None
        self.fetches = 0
        """HTTP fetches made so far (a test checks the sharing)."""

    async def close(self) -> None:
        if self._round is not None and not self._round.done():
            self._round.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def view(self, scheme: str) -> dict[str, Any]:
        now = self._clock()
        cached = self._cached
        if cached is not None and cached[1] == scheme and now - cached[0] < self.cache_seconds:
            return cached[2]
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._gather(scheme))
        # shield: a caller that goes away does not cancel the round the others wait for
        return await asyncio.shield(self._round)

    async def _gather(self, scheme: str) -> dict[str, Any]:
        here = queries.cluster_view(self._status())
        members = here["members"]
        asked = members[:API_MAX_MEMBERS_ASKED]
        views = await asyncio.gather(*(self._fetch(scheme, m, here) for m in asked))
        # the leader's own list knows every follower's lag; prefer it
        leader_view = next(
            (v for ok, v, _ in views if ok and v.get("role") == "leader"),
            here if here["role"] == "leader" else None,
        )
        lag = {m["id"]: m["lag"] for m in leader_view["members"]} if leader_view else {}
        out = []
        for member, (ok, view, error) in zip(asked, views, strict=True):
            out.append(_row(member, view if ok else None, error, lag.get(member["id"])))
        for member in members[API_MAX_MEMBERS_ASKED:]:
            out.append(_row(member, None, "not asked (more than 16 members)", None))
        leader = leader_view["node_id"] if leader_view else here["leader"]
        result = {
            "node_id": here["node_id"],
            "leader": leader,
            "members": out,
        }
        self._cached = (self._clock(), scheme, result)
        return result

    async def _fetch(
        self, scheme: str, member: dict[str, Any], here: dict[str, Any]
    ) -> tuple[bool, dict[str, Any], str | None]:
        if member["id"] == here["node_id"]:
            return True, here, None
        address = member.get("http_address") or ""
        if not address:
            return False, {}, "no HTTP address known"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
            )
        self.fetches += 1
        url = f"{scheme}://{address}/v1/cluster"
        try:
            async with self._session.get(url, ssl=self._tls()) as answer:
                if answer.status != 200:
                    return False, {}, f"HTTP {answer.status}"
                if (answer.content_length or 0) > API_MAX_MEMBER_ANSWER_BYTES:
                    return False, {}, "answer too large"
                raw = await answer.content.read(API_MAX_MEMBER_ANSWER_BYTES + 1)
                if len(raw) > API_MAX_MEMBER_ANSWER_BYTES:
                    return False, {}, "answer too large"
                view = json.loads(raw)
                if not isinstance(view, dict) or not isinstance(view.get("members"), list):
                    return False, {}, "not a /v1/cluster answer"
                return True, view, None
        except TimeoutError:
            return False, {}, f"no answer within {self.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return False, {}, type(exc).__name__

    def tls(self) -> ssl.SSLContext | bool:
        """The context for members' HTTPS (also used to forward to the leader)."""
        return self._tls()

    def _tls(self) -> ssl.SSLContext | bool:
        if self._ssl is None:
            if not self.verify_tls:
                self._ssl = False
            else:
                context = ssl.create_default_context()
                if self.ca_file:
                    context.load_verify_locations(cafile=self.ca_file)
                self._ssl = context
        return self._ssl


def _row(
    member: dict[str, Any], view: dict[str, Any] | None, error: str | None, lag: int | None
) -> dict[str, Any]:
    return {
        "id": member["id"],
        "name": member["name"],
        "voter": member["voter"],
        "http_address": member["http_address"],
        "reachable": view is not None,
        "error": error,
        "role": view["role"] if view else None,
        "term": view["term"] if view else None,
        "leader": view["leader"] if view else None,
        "commit_index": view["commit_index"] if view else None,
        "applied_index": view["applied_index"] if view else None,
        "lag": lag,
    }
