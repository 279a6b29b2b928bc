-- Deduplicated readings: every raw row that was not quarantined, exactly once per key.
-- Raw rows arrive typed (a value that does not parse is quarantined); this model keeps the ones
-- that passed. A Dagster partition run passes its days as vars (min_date, max_date) and rebuilds
-- only those.
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
    select partition_date, source_id, source_row
    from {{ source('sensor_anomaly', 'readings_quarantine') }}
    where partition_date between '{{ var("min_date") }}' and '{{ var("max_date") }}'
)

select
    raw.sensor_id,
    raw."timestamp",
    raw.value,
    raw.temperature,
    raw.vibration,
    raw.partition_date,
    raw.source_file,
    raw.source_row,
    raw.file_sha256
from raw
anti join quarantined using (partition_date, source_id, source_row)
qualify row_number() over (
    partition by raw.sensor_id, raw."timestamp"
    order by raw.source_file, raw.source_row
) = 1
