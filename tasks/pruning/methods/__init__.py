"""The pruning family's methods: ``unpruned`` (a model trained directly) and the pruning criteria
(``magnitude``, ``taylor``, ``random``), each a class registered in ``tasks.pruning.config.METHODS``."""
