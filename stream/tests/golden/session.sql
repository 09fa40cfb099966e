-- Session windows: a sensor's readings closer than 5 seconds form one session.
-- stream: bursts
-- lateness: 0s
-- continuous:
SELECT sensor, session(ts, INTERVAL '5 seconds') AS w, count(*) AS n, max(value) AS hi
FROM readings
GROUP BY sensor, session(ts, INTERVAL '5 seconds');
-- oracle:
SELECT sensor, min(ts) AS w, count(*) AS n, max(value) AS hi
FROM (
  SELECT sensor, ts, value,
         sum(CASE WHEN prev IS NULL OR ts - prev >= INTERVAL '5 seconds' THEN 1 ELSE 0 END)
           OVER (PARTITION BY sensor ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
  FROM (SELECT sensor, ts, value, lag(ts) OVER (PARTITION BY sensor ORDER BY ts) AS prev FROM readings) t
) s
GROUP BY sensor, sid;
