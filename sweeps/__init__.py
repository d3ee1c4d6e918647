"""stoprace sweeps package."""
