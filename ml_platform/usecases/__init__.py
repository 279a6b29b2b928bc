"""The registry of use cases the platform serves."""

from ml_platform.spec import UseCaseSpec
from ml_platform.usecases.sensor_anomaly import SPEC as SENSOR_ANOMALY

USE_CASES: dict[str, UseCaseSpec] = {spec.name: spec for spec in (SENSOR_ANOMALY,)}


def get_use_case(name: str) -> UseCaseSpec:
    try:
        return USE_CASES[name]
    except KeyError:
        known = ", ".join(sorted(USE_CASES))
        raise KeyError(f"unknown use case {name!r}; known: {known}") from None
