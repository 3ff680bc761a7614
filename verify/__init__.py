"""marl-oracle verifiers."""
