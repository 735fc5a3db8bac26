"""sensors of the Kirin provider."""
