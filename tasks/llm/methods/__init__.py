"""The llm family's methods: one efficient variant of the model each (see :class:`tasks.llm.config.Variant`).

Every variant but bf16 touches the blocks' linear layers only, so the float32 token embedding (tied to
the output head in SmolLM2 and Llama 3.2) is shared by all of them. Modules here import only light
libraries at module level (``suite list`` imports them); torch, torchao and the family's heavy modules
are imported inside the methods.
"""
