-- Run once by the postgres image on an empty data volume, as POSTGRES_USER (the owner of both).
-- Dagster's runs, event logs and schedules; MLflow's tracking and model registry.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
