-- Stream-table join: readings enriched with sensor metadata, aggregated per site.
-- stream: readings
-- lateness: 0s
-- tolerance: p50=0.05
-- continuous:
SELECT m.region, tumble(r.ts, INTERVAL '1 minute') AS w, avg(r.value) AS mean,
       count(*) AS n, approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY r.value) AS p50
FROM readings r JOIN sensors m ON r.sensor = m.sensor
WHERE m.active AND r.field = 'temp'
GROUP BY m.region, tumble(r.ts, INTERVAL '1 minute');
-- oracle:
SELECT m.region, date_bin(INTERVAL '1 minute', r.ts) AS w, avg(r.value) AS mean,
       count(*) AS n, median(r.value) AS p50
FROM readings r JOIN sensors m ON r.sensor = m.sensor
WHERE m.active AND r.field = 'temp'
GROUP BY m.region, date_bin(INTERVAL '1 minute', r.ts);
