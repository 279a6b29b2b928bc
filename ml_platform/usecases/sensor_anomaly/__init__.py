"""The shipped example: its spec, the synthetic data it is demonstrated on, and its drift story.

Nothing outside this folder knows its columns; the platform reads them from ``SPEC``.
"""

from ml_platform.usecases.sensor_anomaly.spec import SPEC

__all__ = ["SPEC"]
