"""`edgeq plan`: which quant fits a machine, how much RAM it takes, how fast it runs, which to ship."""
from .planner import (
    DEFAULT_CTX,
    DEFAULT_QUANTS,
    SCHEMA,
    PlanResult,
    QuantPlan,
    largest,
    plan,
)

__all__ = ["DEFAULT_CTX", "DEFAULT_QUANTS", "SCHEMA", "PlanResult", "QuantPlan", "largest", "plan"]
