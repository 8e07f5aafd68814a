"""Coverage-guided fuzz targets (atheris), their corpus and runner: see __main__.py."""
