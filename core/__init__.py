"""The bottom layer: the typed-config machinery, the errors users can fix, and paths.

Nothing here imports the rest of the project, torch or MLflow."""
