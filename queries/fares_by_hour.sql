-- description: Trip count and average fare per pickup hour within a time window
-- param: start TIMESTAMP default '2016-01-01 00:00:00' -- window start (inclusive)
-- param: stop TIMESTAMP default '2016-03-01 00:00:00' -- window end (exclusive)
-- param: min_distance DOUBLE default 0 -- ignore shorter trips (miles)
SELECT
  hour(tpep_pickup_datetime) AS pickup_hour,
  count(*) AS trips,
  round(avg(fare_amount), 2) AS avg_fare
FROM samples.nyctaxi.trips
WHERE tpep_pickup_datetime >= :start
  AND tpep_pickup_datetime < :stop
  AND trip_distance >= :min_distance
GROUP BY hour(tpep_pickup_datetime)
ORDER BY pickup_hour
