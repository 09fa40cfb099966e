-- One of three partitions goes quiet: after the idle timeout the others' watermark
-- closes windows on their own.
-- stream: idle
-- lateness: 0s
-- continuous:
SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, count(*) AS n, avg(value) AS mean
FROM readings
GROUP BY sensor, tumble(ts, INTERVAL '1 minute');
-- oracle:
SELECT sensor, date_bin(INTERVAL '1 minute', ts) AS w, count(*) AS n, avg(value) AS mean
FROM readings
GROUP BY sensor, date_bin(INTERVAL '1 minute', ts);
