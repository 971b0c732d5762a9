"""The memorization family's methods, one module each: how the model with the planted canaries is trained."""
