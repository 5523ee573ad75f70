"""FaR's series, served on its admin listener's ``/metrics`` (``accesspoint.servicekit.metrics``).

``far_lookups_total{question, answer}`` counts recipients answered (``question``: reachable or registered;
``answer``: reachable or the reason it is not, from ``far.service.Reason``), ``far_is_reachable_duration_seconds``
times each question (REST and SOAP alike); the HTTP series count every request by route template. No person
number or organisation number is ever a label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from accesspoint.servicekit.metrics import Metrics

if TYPE_CHECKING:  # far.service counts through this module
    from far.service import Reachability


class FarMetrics(Metrics):
    """Every series of one FaR."""

    def __init__(self) -> None:
        super().__init__("far")
        self.lookups = self.counter(
            "far_lookups_total", "Recipients answered, by question and answer", ("question", "answer")
        )
        self.duration = self.histogram(
            "far_is_reachable_duration_seconds", "Answering one question (up to 1,000 recipients)", ("question",)
        )

    def answered(self, question: str, results: Iterable[Reachability]) -> None:
        """Count each recipient's answer (one increment per answer kind: a batch is 1,000 recipients)."""
        counts = Counter(
            "reachable" if result.reachable else str(getattr(result.reason, "value", "unknown")) for result in results
        )
        self._count(question, counts)

    def counted(self, question: str, results: Counter[int | str], operators: int) -> None:
        """Count a routes answer's results (``far.service.Routes``: an operator's index means reachable)."""
        reachable = sum(results[index] for index in range(operators))
        counts = Counter({answer: n for answer, n in results.items() if isinstance(answer, str)})
        if reachable:
            counts["reachable"] = reachable
        self._count(question, counts)

    def _count(self, question: str, counts: Counter[str]) -> None:
        for answer, count in counts.items():
            self.lookups.labels(question=question, answer=answer).inc(count)
