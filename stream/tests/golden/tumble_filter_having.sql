-- WHERE before the window, HAVING and expressions after it, keys from two columns.
-- stream: readings
-- lateness: 0s
-- continuous:
SELECT site, field, tumble(ts, INTERVAL '30 seconds') AS w, count(*) AS n,
       max(value) - min(value) AS spread, first_value(value) AS first, last_value(value) AS last
FROM readings
WHERE value > 10
GROUP BY site, field, tumble(ts, INTERVAL '30 seconds')
HAVING count(*) >= 3;
-- oracle:
SELECT site, field, date_bin(INTERVAL '30 seconds', ts) AS w, count(*) AS n,
       max(value) - min(value) AS spread,
       first_value(value ORDER BY ts) AS first, last_value(value ORDER BY ts) AS last
FROM readings
WHERE value > 10
GROUP BY site, field, date_bin(INTERVAL '30 seconds', ts)
HAVING count(*) >= 3;
