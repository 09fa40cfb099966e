-- Late data: rows within the allowed lateness update their (already emitted) window;
-- rows beyond it are counted late and left out.
-- stream: late
-- lateness: 30s
-- continuous:
SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, count(*) AS n, sum(value) AS total
FROM readings
GROUP BY sensor, tumble(ts, INTERVAL '1 minute');
-- oracle:
SELECT sensor, date_bin(INTERVAL '1 minute', ts) AS w, count(*) AS n, sum(value) AS total
FROM readings
GROUP BY sensor, date_bin(INTERVAL '1 minute', ts);
