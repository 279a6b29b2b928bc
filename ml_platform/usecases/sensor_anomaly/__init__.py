"""The shipped example: its spec, the synthetic data it is demonstrated on, and its drift story.

Nothing outside this folder knows its columns; the platform reads them from ``SPEC``.
"""

from pathlib import Path

from ml_platform.usecases import Example
from ml_platform.usecases.sensor_anomaly.spec import SPEC


def _land(landing: Path) -> list[Path]:
    from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, write_sensor_data

    return write_sensor_data(landing, SensorDataConfig())


EXAMPLE = Example(land=_land, requests=tuple({"sensor_id": f"s-{i}"} for i in (1, 2, 3)))

__all__ = ["EXAMPLE", "SPEC"]
