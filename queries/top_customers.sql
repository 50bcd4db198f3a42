-- description: Customers with the largest total order value in one market segment
-- param: segment STRING default 'BUILDING' -- c_mktsegment, such as BUILDING or MACHINERY
-- param: min_total DECIMAL(18,2) default 0 -- only customers above this total
-- param: limit INT default 10
SELECT
  c.c_custkey,
  c.c_name,
  n.n_name AS nation,
  count(o.o_orderkey) AS orders,
  sum(o.o_totalprice) AS total_price
FROM samples.tpch.customer AS c
JOIN samples.tpch.orders AS o ON o.o_custkey = c.c_custkey
JOIN samples.tpch.nation AS n ON n.n_nationkey = c.c_nationkey
WHERE c.c_mktsegment = :segment
GROUP BY c.c_custkey, c.c_name, n.n_name
HAVING sum(o.o_totalprice) > :min_total
ORDER BY total_price DESC
LIMIT :limit
