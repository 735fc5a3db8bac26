"""triggers of the Kirin provider."""
