"""Resources clients create upstream through the proxy, and the tenant each belongs to."""

from .owners import Owners, Page
from .references import check_references, referenced_names

__all__ = ["Owners", "Page", "check_references", "referenced_names"]
