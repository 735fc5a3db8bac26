"""operators of the Kirin provider."""
