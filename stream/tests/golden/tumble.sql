-- Tumbling 1-minute windows per sensor: avg, max, count, sum, min, stddev.
-- stream: readings
-- lateness: 0s
-- continuous:
SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w,
       avg(value) AS mean, max(value) AS hi, min(value) AS lo, count(*) AS n,
       sum(value) AS total, stddev(value) AS sd
FROM readings
GROUP BY sensor, tumble(ts, INTERVAL '1 minute');
-- oracle:
SELECT sensor, date_bin(INTERVAL '1 minute', ts) AS w,
       avg(value) AS mean, max(value) AS hi, min(value) AS lo, count(*) AS n,
       sum(value) AS total, stddev(value) AS sd
FROM readings
GROUP BY sensor, date_bin(INTERVAL '1 minute', ts);
