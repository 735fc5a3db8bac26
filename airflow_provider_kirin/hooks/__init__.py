"""hooks of the Kirin provider."""
