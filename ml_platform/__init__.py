"""ml_platform: an end-to-end ML platform on Dagster, MLflow, Evidently and Ray Serve."""
