"""Every route's risk monitor, rebuilt from the feedback in the decision log.

A route's monitors (the route-wide one and one per group, :meth:`Route.observe_loss`)
hold the feedback on the decisions its *current artifact* made (the decision log
records which artifact made each decision, and the request's group): the certificate
they check is that artifact's. So the monitors

- survive a reload of the same artifact (SIGHUP, ``POST /admin/reload``) and a
  restart: an alarm raised by feedback stays raised until a new artifact serves;
- start from that artifact's own feedback when another artifact serves (a new
  certificate gets new monitors; feedback on the old one's decisions no longer counts);
- is the same in every worker and every instance that shares the log: each applies
  the same stored losses, in stored order as they become visible.

Concurrent writers (workers, instances on one PostgreSQL) may commit feedback out of
its ``seq`` order; each sync reads again the last :data:`REREAD` rows before the newest
one applied, so a row committed late is applied late, not lost.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from racer.serve.decision_log import DecisionLog
    from racer.serve.route import Route

REREAD = 256  # feedback rows read again behind the newest applied one


class MonitorSync:
    """Applies the feedback stored in ``decision_log`` to the monitors of the routes
    (route-wide and per group).

    Parameters
    ----------
    decision_log : DecisionLog
        Where feedback is stored (shared by every worker and instance).

    Notes
    -----
    Blocking (database reads): call :meth:`sync` and :meth:`install` off the event loop.
    """

    def __init__(self, decision_log: DecisionLog):
        self.decision_log = decision_log
        self.seen = 0  # the newest feedback row applied
        self.recent: set[int] = set()  # rows applied among the last REREAD before seen
        self._lock = threading.Lock()  # one sync or install at a time: each loss applied once

    def sync(self, routes: MutableMapping[str, Route]) -> int:
        """Apply the feedback stored since the last call; return how many losses counted."""
        with self._lock:
            counted = 0
            rows = self.decision_log.artifact_feedback(max(self.seen - REREAD, 0))
            for seq, name, artifact_id, group, loss in rows:
                if seq <= self.seen - REREAD or seq in self.recent:
                    continue
                self.seen = max(self.seen, seq)
                self.recent.add(seq)
                route = routes.get(name)
                if route is not None and artifact_id == route.artifact_id:
                    route.observe_loss(loss, group)
                    counted += 1
            self.recent = {seq for seq in self.recent if seq > self.seen - REREAD}
            return counted

    def install(self, routes: MutableMapping[str, Route], new: Route) -> bool:
        """Serve ``new`` from the next request on, with its artifact's monitors.

        The same artifact as the serving route keeps that route's monitor objects (the
        route-wide one and the group ones); another one gets its monitors rebuilt from
        the feedback stored on its decisions.

        Returns
        -------
        bool
            Whether the monitors were kept.
        """
        with self._lock:
            old = routes.get(new.name)
            kept = old is not None and old.artifact_id == new.artifact_id
            if kept:
                new.monitor = old.monitor
                new.group_monitors = old.group_monitors
            else:
                rows = self.decision_log.artifact_feedback(0, new.name, new.artifact_id)
                for seq, _, artifact_id, group, loss in rows:
                    if seq <= self.seen and artifact_id == new.artifact_id:
                        new.observe_loss(loss, group)  # later rows: applied by the next sync
                        if seq > self.seen - REREAD:
                            self.recent.add(seq)  # a late row: not again by the next sync
            routes[new.name] = new  # one assignment: decided requests keep the old route
            return kept
