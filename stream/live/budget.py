"""Moved to stream/analysis/budget.py (kept until stream/live imports it from there)."""

from stream.analysis.budget import FrameBudget as FrameBudget
