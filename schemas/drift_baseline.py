"""Binned distributions a model records at training time, so drift can be measured online.

A numeric feature (and the score) keeps the inner edges of its training deciles; a categorical
feature keeps its categories. Both keep the share of training rows in each bin.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Distribution(BaseModel):
    model_config = ConfigDict(frozen=True)

    edges: list[float] | None = Field(
        default=None, description="Numeric: inner bin edges (bins = len(edges) + 1)."
    )
    categories: list[str] | None = Field(
        default=None, description="Categorical: one bin per category, plus one for 'other'."
    )
    proportions: list[float] = Field(description="Share of training rows per bin (sums to 1).")

    @model_validator(mode="after")
    def _bins_match(self) -> Distribution:
        if (self.edges is None) == (self.categories is None):
            raise ValueError("a distribution has either edges or categories")
        bins = len(self.edges) + 1 if self.edges is not None else len(self.categories or []) + 1
        if len(self.proportions) != bins:
            raise ValueError(f"{bins} bins need {bins} proportions, not {len(self.proportions)}")
        return self


class DriftBaseline(BaseModel):
    """The training distribution of the score and of every feature."""

    model_config = ConfigDict(frozen=True)

    score: Distribution
    features: dict[str, Distribution]
    rows: int = Field(ge=1)
