"""The FastAPI peer of ``bench/serving.py``: the registered model loaded in-process, scored per request.

What a team would write by hand in a few lines: uvicorn (1 or 2 workers, the bench keeps the
better), the model loaded once at import (through the platform's own verified loader, so it is
byte for byte the registered artifact), and per request: take the JSON body, build a pandas frame,
call the pipeline's scoring, answer JSON. The handler is a plain ``def``, so FastAPI runs the
blocking scikit-learn call in its thread pool, off the event loop, as its documentation advises.
No batching, no validation beyond what pandas does, no logging, no metrics.

Started by the bench as ``uvicorn --app-dir bench _fastapi_peer:app``; reads ``ML_PLATFORM_HOME``
and ``MLFLOW_TRACKING_URI`` (the bench's temporary home) and ``BENCH_MODEL_VERSION``.
"""

from __future__ import annotations

import os

import pandas as pd
from fastapi import FastAPI

from ml_platform.settings import load_settings
from ml_platform.tasks import task_of
from ml_platform.training.registry import load_verified_model, model_ref
from ml_platform.usecases import get_use_case

USE_CASE = "sensor_anomaly"
SPEC = get_use_case(USE_CASE)
NAMES = SPEC.features.feature_names()
TASK = task_of(SPEC)

settings = load_settings()
ref = model_ref(settings, USE_CASE, os.environ["BENCH_MODEL_VERSION"])
pipeline = load_verified_model(ref, settings.run_dir / "fastapi_peer_cache", TASK)

app = FastAPI()


@app.get("/ping")
async def ping() -> dict:
    return {"model_version": ref.version}


@app.post("/invocations")
def invocations(body: dict) -> dict:  # a dict parameter is the JSON body
    frame = pd.DataFrame.from_records(body["dataframe_records"], columns=NAMES).astype(float)
    return {"predictions": TASK.answers(pipeline, TASK.scores(pipeline, frame))}
