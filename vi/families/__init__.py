"""Variational families."""

from vi.families.mean_field import Family, MeanFieldParams, mean_field_gaussian

__all__ = ["Family", "MeanFieldParams", "mean_field_gaussian"]
