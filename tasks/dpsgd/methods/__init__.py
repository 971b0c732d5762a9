"""The dpsgd family's methods, one module each; importing a module registers its method."""
