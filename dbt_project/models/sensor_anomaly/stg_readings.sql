-- Typed, deduplicated readings: every raw row that was not quarantined, exactly once per key.
-- A Dagster partition run passes its days as vars (min_date, max_date) and rebuilds only those.
{{ config(
    schema='sensor_anomaly',
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{% if is_incremental() %}delete from {{ this }} where partition_date between '{{ var('min_date') }}' and '{{ var('max_date') }}'{% endif %}"
) }}

with raw as (
    select * from {{ source('sensor_anomaly', 'raw_readings') }}
    where partition_date between '{{ var("min_date") }}' and '{{ var("max_date") }}'
),

quarantined as (
    select source_file, source_row, file_sha256
    from {{ source('sensor_anomaly', 'readings_quarantine') }}
    where partition_date between '{{ var("min_date") }}' and '{{ var("max_date") }}'
)

select
    raw.sensor_id,
    cast(raw."timestamp" as timestamptz) as "timestamp",
    cast(raw.value as double) as value,
    try_cast(raw.temperature as double) as temperature,
    try_cast(raw.vibration as double) as vibration,
    raw.partition_date,
    raw.source_file,
    raw.source_row,
    raw.file_sha256
from raw
anti join quarantined using (source_file, source_row, file_sha256)
qualify row_number() over (
    partition by raw.sensor_id, cast(raw."timestamp" as timestamptz)
    order by raw.source_file, raw.source_row
) = 1
