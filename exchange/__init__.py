"""Safeguarding Exchange: sealed, rule-checked, recorded information sharing between agencies."""

__version__ = "0.1.0"
