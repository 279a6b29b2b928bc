"""What the training assets hand each other (through ``resources.handoffs``)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainingSetIdentity:
    """What a candidate is trained on; recorded with it in MLflow."""

    rows: int
    content_sha256: str
    first_event: str
    last_event: str
    # The train split's window: the reference a drift report compares recent data with.
    train_from: str
    train_to: str


@dataclass(frozen=True)
class Candidate:
    """A registered model version, not yet judged."""

    version: str
    mlflow_run_id: str
    artifact_sha256: str


@dataclass(frozen=True)
class Evaluation:
    """The gate's verdict on a version, with its finite held-out figures."""

    version: str
    gate_passed: bool
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Champion:
    """The version the champion alias was moved to (or kept at), and the one it replaced."""

    version: str
    previous_version: str
