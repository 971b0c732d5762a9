"""MLflow runs -> pandas -> a static leaderboard site.

``build.build_site(tracker, out_dir)`` is the entry point (``suite leaderboard``). The steps:
``collect`` (the tracker's frame of runs and their result.json), ``aggregate`` (one table per task,
tier and task version; mean and 95% CI over seeds), ``summary`` (Pareto fronts, headlines),
``plots`` (matplotlib SVG), ``views``/``configs`` (what the templates show) and ``site``
(jinja2 templates in ``templates/``, CSV and JSON downloads).
"""
