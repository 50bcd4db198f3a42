-- description: Taxi trips picked up in one zip code, newest first
-- param: zip INT required -- pickup zip code, such as 10001
-- param: since DATE default 2016-01-01 -- first pickup day counted
-- param: limit INT default 100 -- at most this many trips
SELECT
  tpep_pickup_datetime,
  tpep_dropoff_datetime,
  trip_distance,
  fare_amount,
  dropoff_zip
FROM samples.nyctaxi.trips
WHERE pickup_zip = :zip
  AND tpep_pickup_datetime >= :since
ORDER BY tpep_pickup_datetime DESC
LIMIT :limit
