"""Task families; each ``tasks/<family>/task.py`` registers its task by name on import."""
