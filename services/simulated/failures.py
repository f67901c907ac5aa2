"""Which simulated runs fail: by name prefix, for the first `attempts` attempts, unless healed.

Shared by the simulated cluster (a Terraform apply) and the simulated Semaphore (a playbook run), so
dev users can provoke either failure by naming an instance `fail-prov-…` or `fail-conf-…` and then
retry it. Attempts are counted per key (the instance id), so a retry with a new object or task counts too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class FailurePlan:
    """`prefix` None disables failures; `attempts` None fails every attempt until `heal`ed."""

    prefix: str | None
    attempts: int | None = 1
    _counts: dict[str, int] = field(default_factory=dict, repr=False)
    _healed: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 0:
            raise ValueError("attempts must be at least 0, or None for every attempt")

    def heal(self, name: str) -> None:
        """From now on runs for `name` (any of the names a run is known by) succeed."""
        self._healed.add(name)

    def next_attempt_fails(self, name: str, *, key: str, aliases: Iterable[str] = ()) -> bool:
        """Count one attempt for `key` and say whether it fails."""
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if self.prefix is None or not name.startswith(self.prefix):
            return False
        if self._healed.intersection((name, key, *aliases)):
            return False
        return self.attempts is None or count <= self.attempts
