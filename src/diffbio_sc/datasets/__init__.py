"""Bundled demo data and synthetic generators."""

from ._demo import celllines_demo
from ._genetics import simulate_genetic_cohort, simulate_phenotype
from ._synthetic import synthetic_counts

__all__ = ["celllines_demo", "synthetic_counts", "simulate_genetic_cohort", "simulate_phenotype"]


def __dir__() -> list[str]:
    """Return the public names only (``dir(dfm.datasets)``, tab completion)."""
    return sorted(__all__)
