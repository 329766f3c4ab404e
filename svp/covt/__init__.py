"""CoVT building blocks (no ms-swift): visual-thought tokens, experts, heads and losses."""
