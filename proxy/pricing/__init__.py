"""Prices: the catalog of Google's price lists and the pure cost engine (docs/pricing.md)."""

from .catalog import Catalog, ModelPrice, PriceListInfo, Rate, normalize_model
from .cost import (
    FREE_OPERATIONS,
    Cost,
    CostLine,
    MissingRate,
    PricedCall,
    PricingError,
    UnmeterableUsage,
    compute_cost,
    price_call,
    price_operation,
)

__all__ = [
    "FREE_OPERATIONS",
    "Catalog",
    "Cost",
    "CostLine",
    "MissingRate",
    "ModelPrice",
    "PriceListInfo",
    "PricedCall",
    "PricingError",
    "Rate",
    "UnmeterableUsage",
    "compute_cost",
    "normalize_model",
    "price_call",
    "price_operation",
]
