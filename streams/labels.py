"""Decision labels, compared without regard to case.

A producer that sends `DECLINE` instead of `decline` must not silently lose
the always-explain guarantee of adverse decisions, so labels are compared
case-folded everywhere (priority, top reasons). A label that is neither
adverse nor one of the known others is counted in /metrics
(`whystream_unknown_decisions{label}`, the first `MAX_LABELS` distinct labels,
the rest as `other`) and logged once: it is probably a typo or a new label the
configuration does not know about yet.

>>> labels = DecisionLabels({"Decline", "review"}, {"approve"})
>>> "DECLINE" in labels, "approve" in labels
(True, False)
"""

from __future__ import annotations

import logging
from collections import Counter

from whystream.logsafe import printable

log = logging.getLogger("whystream.labels")
MAX_LABELS = 20


class DecisionLabels:
    """The adverse labels as a case-insensitive set (`in`), and the unknown-label count."""

    def __init__(self, adverse, others=("approve",), metric=None):
        self.adverse = frozenset(label.casefold() for label in adverse)
        self.known = self.adverse | {label.casefold() for label in others}
        self.metric = metric  # a prometheus Counter with one label, or None
        self._warned: set[str] = set()

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and label.casefold() in self.adverse

    def __iter__(self):
        return iter(self.adverse)

    def __len__(self) -> int:
        return len(self.adverse)

    def note(self, decisions: list[str]) -> None:
        """Count (and warn once about) the labels of a batch that are not known."""
        if not decisions:
            return
        counts = Counter(decisions)  # few distinct labels: each is checked once, not each event
        for label, count in counts.items():
            if label in self.known or label.casefold() in self.known:
                continue
            name = label.casefold()
            if name not in self._warned:
                if len(self._warned) >= MAX_LABELS:
                    name = "other"
                else:
                    self._warned.add(name)
                    log.warning("decision label %r is neither adverse (%s) nor known (%s): counted in "
                                "whystream_unknown_decisions; set sampling.adverse_decisions if it is adverse",
                                printable(label, 100), ", ".join(sorted(self.adverse)),
                                ", ".join(sorted(self.known - self.adverse)))
            if self.metric is not None:
                self.metric.labels(printable(name, 100)).inc(count)
