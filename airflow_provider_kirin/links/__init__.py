"""Operator extra links of the Kirin provider."""
