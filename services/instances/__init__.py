"""The instance domain: what an instance is, who may see it, and how it moves through its lifecycle."""
