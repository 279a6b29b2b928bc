"""Typed values assets hand each other, kept in the Dagster instance beside the materialization
that made them.

An asset returns ``MaterializeResult(value=...)`` holding a dataclass and the next one takes it as
a typed argument. The value travels as the materialization's JSON metadata ``handoff``: it is stored
wherever Dagster's event log is (SQLite or PostgreSQL), shown in the UI, never unpickled, and needs
no filesystem shared by run workers.
"""

import dataclasses

import dagster as dg

HANDOFFS = "handoffs"  # the resource key of the IO manager
HANDOFF = "handoff"  # the metadata entry holding the value


class HandoffIOManager(dg.ConfigurableIOManager):
    """Writes a dataclass as the materialization's metadata; reads the latest one back as the
    type the consuming asset declares."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: a hand-off is a dataclass, got {type(obj).__name__}"
            )
        value = {"type": type(obj).__name__, "value": dataclasses.asdict(obj)}
        context.add_output_metadata({HANDOFF: dg.MetadataValue.json(value)})

    def load_input(self, context: dg.InputContext) -> object:
        expected = context.dagster_type.typing_type
        name = context.asset_key.to_user_string()
        event = context.instance.get_latest_materialization_event(context.asset_key)
        materialization = event.asset_materialization if event else None
        entry = materialization.metadata.get(HANDOFF) if materialization else None
        if entry is None:
            raise dg.Failure(
                description=(
                    f"{name} has handed on no {expected.__name__} in this Dagster instance (never "
                    f"materialized, or by an older version); materialize {name} first"
                ),
                allow_retries=False,
            )
        handed = entry.value
        if handed.get("type") != expected.__name__:
            raise dg.Failure(
                description=(
                    f"{name} handed on a {handed.get('type')}, not the {expected.__name__} expected; "
                    f"materialize {name} again"
                ),
                allow_retries=False,
            )
        return expected(**handed["value"])
