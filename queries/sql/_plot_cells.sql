-- internal: plot cells for queries.plot: the filtered outcomes (view @@src@@) grouped by the plot keys;
-- probabilities pool the counts of every point in a cell, stop-time metrics take the cell's maximum.
SELECT
    @@keys@@,
    count(*) AS points,
    sum(trials)::BIGINT AS trials,
    sum(@@k@@)::BIGINT AS k,
    @@value@@ AS value,
    @@lo@@ AS lo,
    @@hi@@ AS hi
FROM @@src@@
GROUP BY @@keys@@
ORDER BY @@keys@@
