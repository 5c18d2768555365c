"""Example independent step services; each runs as its own process."""
