"""The labeldp methods, one module each (registered in ``tasks.labeldp.config.METHODS``)."""
