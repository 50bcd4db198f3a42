# ruff: noqa: S608  (the SQL here is built from constants; file names are quoted)
"""Sample data generated at start-up, deterministically and without downloads.

`samples.nyctaxi.trips` has the columns and row count of the real sample (21,932 rows);
`samples.tpch` holds the eight TPC-H tables at scale factor 0.01. Pseudo-random values come
from integer hashing of the row number, so every start produces the same data.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

TRIPS_ROWS = 21_932

_NYC_ZIPS = (
    "[10001, 10002, 10003, 10009, 10010, 10011, 10012, 10013, 10014, 10016, 10017, 10018, "
    "10019, 10021, 10022, 10023, 10024, 10025, 10028, 10036, 10065, 10075, 10103, 10110, "
    "10128, 10153, 10167, 10199, 11101, 11201, 11215, 11217, 11238, 11371, 11422, 11430]"
)


def _h(column: str, salt: int) -> str:
    """A deterministic 32-bit hash of an integer column (multiplicative hashing)."""
    return f"(({column} * {2654435761 + 2 * salt} + {salt * 7919}) % 4294967296)"


_TRIPS = f"""
CREATE TABLE samples.nyctaxi.trips AS
WITH base AS (
    SELECT {_h("range", 1)} AS h1, {_h("range", 2)} AS h2, {_h("range", 3)} AS h3,
           {_h("range", 4)} AS h4, {_NYC_ZIPS} AS zips
    FROM range({TRIPS_ROWS})
)
SELECT
    TIMESTAMPTZ '2016-01-01 00:00:00+00' + to_seconds(h1 % 5184000) AS tpep_pickup_datetime,
    TIMESTAMPTZ '2016-01-01 00:00:00+00' + to_seconds(h1 % 5184000 + 120 + h2 % 3480)
        AS tpep_dropoff_datetime,
    CAST(round(0.3 + (h3 % 2000) / 100.0, 2) AS DOUBLE) AS trip_distance,
    CAST(round(2.5 + (0.3 + (h3 % 2000) / 100.0) * 2.5 + (h2 % 3480) / 200.0, 1) AS DOUBLE)
        AS fare_amount,
    CAST(zips[1 + h2 % len(zips)] AS INTEGER) AS pickup_zip,
    CAST(zips[1 + h4 % len(zips)] AS INTEGER) AS dropoff_zip
FROM base
"""

_REGIONS = ("AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST")
_NATIONS = (
    ("ALGERIA", 0), ("ARGENTINA", 1), ("BRAZIL", 1), ("CANADA", 1), ("EGYPT", 4),
    ("ETHIOPIA", 0), ("FRANCE", 3), ("GERMANY", 3), ("INDIA", 2), ("INDONESIA", 2),
    ("IRAN", 4), ("IRAQ", 4), ("JAPAN", 2), ("JORDAN", 4), ("KENYA", 0), ("MOROCCO", 0),
    ("MOZAMBIQUE", 0), ("PERU", 1), ("CHINA", 2), ("ROMANIA", 3), ("SAUDI ARABIA", 4),
    ("VIETNAM", 2), ("RUSSIA", 3), ("UNITED KINGDOM", 3), ("UNITED STATES", 1),
)  # fmt: skip


def _values(rows: list[str]) -> str:
    return ", ".join(rows)


_REGION = (
    "CREATE TABLE samples.tpch.region AS SELECT * FROM (VALUES {}) "
    "t(r_regionkey, r_name, r_comment)"
).format(_values([f"({i}::BIGINT, '{r}', 'region {r.lower()}')" for i, r in enumerate(_REGIONS)]))
_NATION = (
    "CREATE TABLE samples.tpch.nation AS SELECT * FROM (VALUES {}) "
    "t(n_nationkey, n_name, n_regionkey, n_comment)"
).format(
    _values(
        [
            f"({i}::BIGINT, '{name}', {region}::BIGINT, 'nation {name.lower()}')"
            for i, (name, region) in enumerate(_NATIONS)
        ]
    )
)

_MONEY = "DECIMAL(18,2)"
_TPCH = [
    f"""CREATE TABLE samples.tpch.supplier AS SELECT
        range::BIGINT AS s_suppkey, printf('Supplier#%09d', range) AS s_name,
        printf('%d Supply Street', {_h("range", 5)} % 9000) AS s_address,
        ({_h("range", 6)} % 25)::BIGINT AS s_nationkey,
        printf('%02d-%03d-%03d-%04d', 10 + {_h("range", 6)} % 25, {_h("range", 7)} % 1000,
               {_h("range", 8)} % 1000, {_h("range", 9)} % 10000) AS s_phone,
        (({_h("range", 10)} % 1099999) / 100.0 - 999.99)::{_MONEY} AS s_acctbal,
        'reliable supplier' AS s_comment
        FROM range(1, 101)""",
    f"""CREATE TABLE samples.tpch.customer AS SELECT
        range::BIGINT AS c_custkey, printf('Customer#%09d', range) AS c_name,
        printf('%d Market Road', {_h("range", 11)} % 9000) AS c_address,
        ({_h("range", 12)} % 25)::BIGINT AS c_nationkey,
        printf('%02d-%03d-%03d-%04d', 10 + {_h("range", 12)} % 25, {_h("range", 13)} % 1000,
               {_h("range", 14)} % 1000, {_h("range", 15)} % 10000) AS c_phone,
        (({_h("range", 16)} % 1099999) / 100.0 - 999.99)::{_MONEY} AS c_acctbal,
        ['AUTOMOBILE', 'BUILDING', 'FURNITURE', 'HOUSEHOLD', 'MACHINERY'][
            1 + {_h("range", 17)} % 5] AS c_mktsegment,
        'regular customer' AS c_comment
        FROM range(1, 1501)""",
    f"""CREATE TABLE samples.tpch.part AS SELECT
        range::BIGINT AS p_partkey,
        ['almond', 'blue', 'coral', 'forest', 'ivory', 'linen', 'navy', 'plum'][
            1 + {_h("range", 18)} % 8] || ' ' ||
        ['antique', 'burnished', 'drab', 'frosted', 'metallic', 'misty'][
            1 + {_h("range", 19)} % 6] AS p_name,
        printf('Manufacturer#%d', 1 + {_h("range", 20)} % 5) AS p_mfgr,
        printf('Brand#%d%d', 1 + {_h("range", 20)} % 5, 1 + {_h("range", 21)} % 5) AS p_brand,
        ['STANDARD', 'SMALL', 'MEDIUM', 'LARGE', 'ECONOMY', 'PROMO'][1 + {_h("range", 22)} % 6]
            || ' ' || ['ANODIZED', 'BRUSHED', 'PLATED', 'POLISHED'][1 + {_h("range", 23)} % 4]
            || ' ' || ['TIN', 'NICKEL', 'BRASS', 'STEEL', 'COPPER'][1 + {_h("range", 24)} % 5]
            AS p_type,
        (1 + {_h("range", 25)} % 50)::INTEGER AS p_size,
        ['SM', 'LG', 'MED', 'JUMBO', 'WRAP'][1 + {_h("range", 26)} % 5] || ' ' ||
        ['CASE', 'BOX', 'BAG', 'JAR', 'PKG', 'PACK', 'CAN', 'DRUM'][1 + {_h("range", 27)} % 8]
            AS p_container,
        (900 + (range % 200) + (range % 1000) / 100.0)::{_MONEY} AS p_retailprice,
        'final part' AS p_comment
        FROM range(1, 2001)""",
    f"""CREATE TABLE samples.tpch.partsupp AS SELECT
        p.range::BIGINT AS ps_partkey,
        (1 + (p.range + s.range * 25) % 100)::BIGINT AS ps_suppkey,
        (1 + {_h("p.range * 4 + s.range", 28)} % 9999)::INTEGER AS ps_availqty,
        (1 + ({_h("p.range * 4 + s.range", 29)} % 99900) / 100.0)::{_MONEY} AS ps_supplycost,
        'bold supply' AS ps_comment
        FROM range(1, 2001) p, range(4) s""",
    f"""CREATE TABLE samples.tpch.orders AS SELECT
        range::BIGINT AS o_orderkey,
        (1 + {_h("range", 30)} % 1500)::BIGINT AS o_custkey,
        ['F', 'O', 'P'][1 + {_h("range", 31)} % 3] AS o_orderstatus,
        (1000 + ({_h("range", 32)} % 40000000) / 100.0)::{_MONEY} AS o_totalprice,
        DATE '1992-01-01' + ({_h("range", 33)} % 2400)::INTEGER AS o_orderdate,
        ['1-URGENT', '2-HIGH', '3-MEDIUM', '4-NOT SPECIFIED', '5-LOW'][
            1 + {_h("range", 34)} % 5] AS o_orderpriority,
        printf('Clerk#%09d', 1 + {_h("range", 35)} % 10) AS o_clerk,
        0::INTEGER AS o_shippriority,
        'pending order' AS o_comment
        FROM range(1, 15001)""",
    f"""CREATE TABLE samples.tpch.lineitem AS SELECT
        o.o_orderkey AS l_orderkey,
        (1 + {_h("o.o_orderkey * 8 + n.range", 36)} % 2000)::BIGINT AS l_partkey,
        (1 + {_h("o.o_orderkey * 8 + n.range", 37)} % 100)::BIGINT AS l_suppkey,
        n.range::INTEGER AS l_linenumber,
        (1 + {_h("o.o_orderkey * 8 + n.range", 38)} % 50)::{_MONEY} AS l_quantity,
        ((1 + {_h("o.o_orderkey * 8 + n.range", 38)} % 50)
            * (900 + {_h("o.o_orderkey * 8 + n.range", 39)} % 1100))::{_MONEY}
            AS l_extendedprice,
        (({_h("o.o_orderkey * 8 + n.range", 40)} % 11) / 100.0)::{_MONEY} AS l_discount,
        (({_h("o.o_orderkey * 8 + n.range", 41)} % 9) / 100.0)::{_MONEY} AS l_tax,
        ['A', 'N', 'R'][1 + {_h("o.o_orderkey * 8 + n.range", 42)} % 3] AS l_returnflag,
        ['F', 'O'][1 + {_h("o.o_orderkey * 8 + n.range", 43)} % 2] AS l_linestatus,
        o.o_orderdate + (1 + {_h("o.o_orderkey * 8 + n.range", 44)} % 121)::INTEGER
            AS l_shipdate,
        o.o_orderdate + (30 + {_h("o.o_orderkey * 8 + n.range", 45)} % 61)::INTEGER
            AS l_commitdate,
        o.o_orderdate + (2 + {_h("o.o_orderkey * 8 + n.range", 44)} % 121)::INTEGER
            AS l_receiptdate,
        ['DELIVER IN PERSON', 'COLLECT COD', 'NONE', 'TAKE BACK RETURN'][
            1 + {_h("o.o_orderkey * 8 + n.range", 46)} % 4] AS l_shipinstruct,
        ['REG AIR', 'AIR', 'RAIL', 'SHIP', 'TRUCK', 'MAIL', 'FOB'][
            1 + {_h("o.o_orderkey * 8 + n.range", 47)} % 7] AS l_shipmode,
        'careful line' AS l_comment
        FROM samples.tpch.orders o, range(1, 8) n
        WHERE n.range <= 1 + {_h("o.o_orderkey", 48)} % 7
        ORDER BY l_orderkey, l_linenumber""",
]


def seed_samples(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the in-memory `samples` catalog with its `nyctaxi` and `tpch` schemas."""
    connection.execute("ATTACH ':memory:' AS samples")
    connection.execute("CREATE SCHEMA samples.nyctaxi")
    connection.execute("CREATE SCHEMA samples.tpch")
    connection.execute(_TRIPS)
    for sql in (_REGION, _NATION, *_TPCH):
        connection.execute(sql)


def attach_data_dir(connection: duckdb.DuckDBPyConnection, data_dir: Path) -> list[str]:
    """Load each Parquet/CSV file of `data_dir` as a table named after the file; return names.

    Tables, not views over the files: once the warehouse is locked down (`engine.lock_down`)
    no statement may touch a host file, so the data is read here, before that.
    """
    readers = {".parquet": "read_parquet", ".csv": "read_csv_auto"}
    names: list[str] = []
    for path in sorted(data_dir.iterdir()):
        reader = readers.get(path.suffix.lower())
        if reader is None or not path.is_file():
            continue
        name = _quote_identifier(path.stem)
        literal = "'" + str(path.resolve()).replace("'", "''") + "'"
        connection.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {reader}({literal})")
        names.append(path.stem)
    return names


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
