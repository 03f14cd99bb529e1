"""Resources clients create upstream through the proxy, and the tenant each belongs to."""

from .owners import Owners, Page

__all__ = ["Owners", "Page"]
