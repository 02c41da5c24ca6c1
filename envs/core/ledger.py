"""Double-entry money ledger in integer cents.

Each entry moves ``cents`` between two of three parties, fixed by its kind:

| kind        | from      | to        |
|-------------|-----------|-----------|
| fee         | customer  | platform  |
| refund      | platform  | customer  |
| payout      | platform  | driver    |
| correction  | platform  | driver    |
| guarantee   | platform  | driver    |
| wage        | platform  | driver    |

An entry also carries when it was earned (``t``) and when it settles (``t_settle``): instantly on
proof of delivery, or at the daily settlement cycle. Dispute corrections settle in the next cycle.
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.types import LED_FEE, LED_REFUND

_FIELDS = (
    ("t", np.float64),
    ("t_settle", np.float64),
    ("kind", np.int8),
    ("order", np.int32),
    ("driver", np.int32),
    ("cents", np.int64),
)


class Ledger:
    def __init__(self, capacity: int = 4096) -> None:
        self._cap = capacity
        self._n = 0
        self._a = {name: np.zeros(capacity, dtype=dt) for name, dt in _FIELDS}

    def __len__(self) -> int:
        return self._n

    def add(
        self,
        t: np.ndarray | float,
        t_settle: np.ndarray | float,
        kind: int,
        order: np.ndarray | int,
        driver: np.ndarray | int,
        cents: np.ndarray | int,
    ) -> None:
        """Append entries (vectorised: array arguments broadcast to one length)."""
        cents = np.atleast_1d(np.asarray(cents, dtype=np.int64))
        if (cents < 0).any():
            raise ValueError("ledger: an entry cannot move a negative amount")
        k = len(cents)
        if k == 0:
            return
        need = self._n + k
        if need > self._cap:
            new_cap = max(need, 2 * self._cap)
            for name, arr in self._a.items():
                grown = np.zeros(new_cap, dtype=arr.dtype)
                grown[: self._n] = arr[: self._n]
                self._a[name] = grown
            self._cap = new_cap
        sl = slice(self._n, need)
        a = self._a
        a["t"][sl] = t
        a["t_settle"][sl] = t_settle
        a["kind"][sl] = kind
        a["order"][sl] = order
        a["driver"][sl] = driver
        a["cents"][sl] = cents
        self._n = need

    def subset(self, keep: np.ndarray, order: np.ndarray, driver: np.ndarray) -> Ledger:
        """A new ledger of the entries where ``keep`` (a mask over the entries) holds, in their order, with their
        order and driver ids replaced by ``order`` and ``driver`` (aligned with the kept entries)."""
        n = int(np.count_nonzero(keep))
        out = Ledger(capacity=max(1024, n))
        for name, _ in _FIELDS:
            out._a[name][:n] = self.column(name)[keep]
        out._a["order"][:n], out._a["driver"][:n] = order, driver
        out._n = n
        return out

    def column(self, name: str) -> np.ndarray:
        return self._a[name][: self._n]

    def total(self, kind: int, settled_by: float | None = None) -> int:
        m = self.column("kind") == kind
        if settled_by is not None:
            m &= self.column("t_settle") <= settled_by
        return int(self.column("cents")[m].sum())

    def balances(self) -> dict[str, int]:
        """Net cents held by each party; they sum to zero by construction of the kinds."""
        kind, cents = self.column("kind"), self.column("cents")
        fee = int(cents[kind == LED_FEE].sum())
        refund = int(cents[kind == LED_REFUND].sum())
        to_driver = int(cents[(kind != LED_FEE) & (kind != LED_REFUND)].sum())
        return {"customer": refund - fee, "platform": fee - refund - to_driver, "driver": to_driver}
