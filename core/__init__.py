"""stoprace core package."""
