"""Side effects of the workflows, one module per concern; every activity is idempotent."""
