-- Merging the edge's partial aggregates: 10-second edge windows rolled up into
-- 1-minute windows are exact. The oracle aggregates the raw readings the edge saw.
-- stream: edge
-- lateness: 0s
-- continuous:
SELECT sensor, field, tumble(window_start, INTERVAL '1 minute') AS w,
       sum("count") AS n, sum("sum") / sum("count") AS mean, min("min") AS lo, max("max") AS hi
FROM aggregates
GROUP BY sensor, field, tumble(window_start, INTERVAL '1 minute');
-- oracle:
SELECT sensor, field, date_bin(INTERVAL '1 minute', ts) AS w,
       count(*) AS n, avg(value) AS mean, min(value) AS lo, max(value) AS hi
FROM readings
GROUP BY sensor, field, date_bin(INTERVAL '1 minute', ts);
