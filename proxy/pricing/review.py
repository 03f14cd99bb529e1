"""Prices an operator should review: counted per call, logged once per model and reason.

A call priced from an entry its seed labels preview although the id names the GA model, or priced
on the fallback list, carries warnings on its :class:`~proxy.pricing.cost.PricedCall`; the meter
hands it here (docs/pricing.md, section 2; docs/metrics.md).
"""

from __future__ import annotations

import logging

from .. import metrics
from .cost import PricedCall

__all__ = ["PriceReview"]

log = logging.getLogger("gemini_meter.pricing")


class PriceReview:
    """The meter's hook: ``review.report(model, label, priced)`` after each priced call."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str]] = set()

    def report(self, model: str, label: str, priced: PricedCall) -> None:
        """Count ``priced``'s warnings under the bounded ``label``; log new ones for ``model``."""
        for reason in priced.warnings:
            metrics.PRICE_WARNINGS.labels(label, priced.price_list or "", reason).inc()
            if (model, reason) in self._logged:
                continue
            self._logged.add((model, reason))
            res = priced.resolution
            notes = [*(res.why if res else ()), *([priced.reason] if priced.reason else [])]
            why = "; ".join(notes)
            log.warning(
                "price to review (%s): model %r is priced with %s/%s, version %s: %s "
                "(gemini-meter prices resolve %s)",
                reason, model, priced.price_list, priced.model, priced.price_version, why, model,
            )  # fmt: skip
