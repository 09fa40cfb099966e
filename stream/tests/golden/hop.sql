-- Hopping windows: 1 minute long, every 20 seconds (each row in three windows).
-- stream: readings
-- lateness: 0s
-- continuous:
SELECT sensor, hop(ts, INTERVAL '20 seconds', INTERVAL '1 minute') AS w,
       avg(value) AS mean, count(*) AS n
FROM readings
GROUP BY sensor, hop(ts, INTERVAL '20 seconds', INTERVAL '1 minute');
-- oracle:
SELECT sensor, date_bin(INTERVAL '20 seconds', ts) - o.shift AS w,
       avg(value) AS mean, count(*) AS n
FROM readings
CROSS JOIN (VALUES (INTERVAL '0 seconds'), (INTERVAL '20 seconds'), (INTERVAL '40 seconds')) AS o(shift)
GROUP BY sensor, date_bin(INTERVAL '20 seconds', ts) - o.shift;
