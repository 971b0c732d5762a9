"""The fl methods, one class each (registered in :data:`tasks.fl.config.METHODS`)."""
