"""The ten tables of a location, written once: for each, the SQL that counts one location's rows
(correlated on `l`, a row of `ocpp.ocpi_locations`). The audit checks that a location is whole
with it; the tests count a network's rows with it."""

from __future__ import annotations

_CHARGERS = (
    "FROM ocpp.charge_points p JOIN ocpp.locations o ON o.id = p.location_id WHERE o.ocpi_location_id = l.id"
)

ROWS_PER_LOCATION: dict[str, str] = {
    "ocpi_locations": "SELECT 1",
    "ocpi_evses": "SELECT count(*) FROM ocpp.ocpi_evses e WHERE e.location_id = l.id",
    "ocpi_connectors": "SELECT count(*) FROM ocpp.ocpi_connectors c JOIN ocpp.ocpi_evses e"
    " ON e.uid = c.evse_uid WHERE e.location_id = l.id",
    "locations": "SELECT count(*) FROM ocpp.locations o WHERE o.ocpi_location_id = l.id",
    "charge_points": f"SELECT count(*) {_CHARGERS}",
    "charge_point_connectors": "SELECT count(*) FROM ocpp.charge_point_connectors pc JOIN"
    f" ({_CHARGERS.replace('FROM', 'SELECT p.id FROM', 1)}) p"
    " ON p.id = pc.charge_point_id",
    "charge_point_credentials": "SELECT count(*) FROM ocpp.charge_point_credentials cr JOIN"
    f" ({_CHARGERS.replace('FROM', 'SELECT p.id FROM', 1)}) p"
    " ON p.id = cr.charge_point_id",
    "network_topology": "SELECT count(*) FROM ocpp.network_topology t WHERE t.ocpi_location_id = l.id",
    "charger_deployments": "SELECT count(*) FROM ocpp.charger_deployments d WHERE d.ocpi_location_id = l.id",
    "ecs_tasks": "SELECT count(*) FROM ocpp.ecs_tasks k JOIN ocpp.charger_deployments d"
    " ON d.id = k.deployment_id WHERE d.ocpi_location_id = l.id",
}


def location_shapes_sql(scope: str) -> str:
    """One row per location in `scope` (a condition on `l`): id, status, and its rows per table."""
    counts = ",\n  ".join(f"({sql}) AS {table}" for table, sql in ROWS_PER_LOCATION.items())
    return f"SELECT l.id, l.status,\n  {counts}\nFROM ocpp.ocpi_locations l WHERE {scope}"


def network_counts_sql() -> str:
    """One row: the rows of every location of network `:n`, per table."""
    sums = ", ".join(f"COALESCE(sum(({sql})), 0) AS {table}" for table, sql in ROWS_PER_LOCATION.items())
    return f"SELECT {sums} FROM ocpp.ocpi_locations l WHERE l.network_id = :n"
