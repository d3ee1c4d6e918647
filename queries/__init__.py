"""stoprace queries package."""
