"""stoprace cluster package."""
