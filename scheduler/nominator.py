"""Preemptors and the victims being deleted for them, kept beside the scheduling queue.

kube-scheduler keeps its nominator with the queue, not in its cache: a nomination is
about which pending pod waits for what, not about what the cluster holds. A preemptor
whose victims still exist waits for them instead of preempting again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class Nominator:
    """Preemptor uid -> uids of the pods deleted to make room for it."""

    def __init__(self) -> None:
        self._victims: dict[str, frozenset[str]] = {}

    def nominate(self, uid: str, victims: Iterable[str]) -> None:
        self._victims[uid] = frozenset(victims)

    def awaiting_victims(self, uid: str, exists: Callable[[str], bool]) -> bool:
        """True while a pod deleted for preemptor `uid` still `exists`; forgets it after."""
        victims = self._victims.get(uid)
        if victims is None:
            return False
        if any(exists(victim) for victim in victims):
            return True
        self._victims.pop(uid, None)
        return False

    def doomed(self, exists: Callable[[str], bool], besides: str = "") -> set[str]:
        """Pods deleted for any preemptor (but `besides`) that still exist: already leaving,
        so another preemptor should count their room as freed, not pick them again."""
        return {v for uid, victims in self._victims.items() if uid != besides for v in victims if exists(v)}

    def forget(self, uid: str) -> None:
        """The preemptor is gone or bound."""
        self._victims.pop(uid, None)
