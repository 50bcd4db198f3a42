"""The local warehouse touches nothing outside its own data, whatever a statement asks.

The guard is DuckDB's own (external access off, configuration locked), not a list of names, so
the table below mixes the obvious file functions with statements no list would think of. Each
must fail as a Databricks-style SQL error that shows no host path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.localwarehouse.conftest import Api, StartWarehouse

SECRET = "canary-7f3a9c"


@pytest.fixture
async def sandboxed(start_warehouse: StartWarehouse, tmp_path: Path) -> tuple[Api, Path]:
    """A warehouse with a data folder, and a folder beside it holding a secret file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cities.csv").write_text("name\nOslo\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".env").write_text(f"DATABRICKS_TOKEN={SECRET}\n")
    (outside / "rows.csv").write_text(f"token\n{SECRET}\n")
    return await start_warehouse(data_dir=data), outside


# {dir} is the folder with the secret file; {data} is the warehouse's own --data folder.
HOSTILE = [
    pytest.param("SELECT content FROM read_text('{dir}/.env')", id="read_text"),
    pytest.param("SELECT * FROM read_blob('{dir}/.env')", id="read_blob"),
    pytest.param("SELECT * FROM read_csv('{dir}/rows.csv')", id="read_csv"),
    pytest.param("SELECT * FROM read_csv_auto(['{dir}/rows.csv'])", id="read_csv_list"),
    pytest.param("SELECT * FROM '{dir}/rows.csv'", id="replacement-scan"),
    pytest.param("SELECT * FROM read_json_auto('{dir}/.env')", id="read_json"),
    pytest.param("SELECT * FROM read_ndjson_objects('{dir}/.env')", id="ndjson-objects"),
    pytest.param("SELECT * FROM read_parquet('{dir}/x.parquet')", id="read_parquet"),
    pytest.param("SELECT * FROM parquet_metadata('{dir}/.env')", id="parquet_metadata"),
    pytest.param("SELECT * FROM sniff_csv('{dir}/rows.csv')", id="sniff_csv"),
    pytest.param("SELECT * FROM glob('{dir}/*')", id="glob"),
    pytest.param("SELECT * FROM glob('{data}/*')", id="glob-own-data-dir"),
    pytest.param("SELECT * FROM read_csv('{data}/cities.csv')", id="re-read-own-data"),
    pytest.param("SELECT * FROM read_text('/etc/passwd')", id="etc-passwd"),
    pytest.param("SELECT * FROM read_text('{dir}/../outside/.env')", id="dot-dot"),
    pytest.param("SELECT * FROM read_text('file://{dir}/.env')", id="file-url"),
    pytest.param("SELECT * FROM read_text('/dev/stdin')", id="dev-stdin"),
    pytest.param("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", id="http-url"),
    pytest.param("SELECT * FROM read_parquet('s3://bucket/x.parquet')", id="s3-url"),
    pytest.param("COPY (SELECT 1 AS x) TO '{dir}/written.csv'", id="copy-to"),
    pytest.param("COPY (SELECT 1 AS x) TO '{dir}/written.parquet' (FORMAT parquet)", id="copy-pq"),
    pytest.param("EXPORT DATABASE '{dir}/export'", id="export"),
    pytest.param("IMPORT DATABASE '{dir}'", id="import"),
    pytest.param("ATTACH '{dir}/written.db' AS other", id="attach-file"),
    pytest.param("ATTACH 'sqlite:{dir}/x.sqlite' AS lite", id="attach-sqlite"),
    pytest.param("INSTALL httpfs", id="install"),
    pytest.param("LOAD httpfs", id="load"),
    pytest.param("FORCE INSTALL json", id="force-install"),
    pytest.param("SELECT * FROM duckdb_extensions()", id="list-extensions"),
    pytest.param("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", id="create-secret"),
    pytest.param("SET enable_external_access = true", id="set-external-access"),
    pytest.param("RESET lock_configuration", id="reset-lock"),
    pytest.param("SET temp_directory = '{dir}'", id="set-temp-dir"),
    pytest.param("PRAGMA enable_profiling = 'json'", id="pragma-profiling"),
    pytest.param("SET profiling_output = '{dir}/profile.json'", id="profiling-output"),
    pytest.param("CALL enable_logging()", id="enable-logging"),
    pytest.param("SELECT * FROM iceberg_scan('{dir}')", id="extension-function"),
]


@pytest.mark.parametrize("template", HOSTILE)
async def test_a_statement_reaching_outside_the_data_fails_without_a_host_path(
    sandboxed: tuple[Api, Path], template: str
) -> None:
    api, outside = sandboxed
    data = api.warehouse.config.data_dir
    statement = template.format(dir=outside, data=data)

    answer = await api.execute(statement)

    status = answer["status"]
    assert status["state"] == "FAILED", answer
    error = status["error"]
    assert error["message"].startswith("["), error
    assert status["sql_state"], status
    if not error["message"].startswith("[PARSE_SYNTAX_ERROR]"):  # may echo the text it read
        assert str(outside) not in error["message"]
    assert str(data) not in error["message"]
    assert str(Path.home()) not in error["message"]
    assert SECRET not in str(answer)
    assert sorted(p.name for p in outside.iterdir()) == [".env", "rows.csv"]


@pytest.mark.parametrize(
    ("disposition", "format_"),
    [
        ("INLINE", "JSON_ARRAY"),  # INLINE allows only JSON_ARRAY (reference §3.1)
        ("EXTERNAL_LINKS", "JSON_ARRAY"),
        ("EXTERNAL_LINKS", "ARROW_STREAM"),
        ("EXTERNAL_LINKS", "CSV"),
    ],
)
async def test_file_access_is_refused_in_every_result_format(
    sandboxed: tuple[Api, Path], disposition: str, format_: str
) -> None:
    api, outside = sandboxed

    answer = await api.execute(
        f"SELECT content FROM read_text('{outside}/.env')",  # noqa: S608 # hostile on purpose
        disposition=disposition,
        format=format_,
    )

    assert answer["status"]["state"] == "FAILED"
    assert answer["status"]["error"]["message"].startswith("[INSUFFICIENT_PERMISSIONS] ")


async def test_the_data_folder_and_samples_stay_readable(sandboxed: tuple[Api, Path]) -> None:
    api, _ = sandboxed

    answer = await api.execute("SELECT name FROM cities")

    assert answer["result"]["data_array"] == [["Oslo"]]


async def test_a_refused_file_read_is_an_insufficient_permissions_error(
    sandboxed: tuple[Api, Path],
) -> None:
    api, outside = sandboxed

    answer = await api.execute(f"SELECT * FROM read_text('{outside}/.env')")  # noqa: S608

    assert answer["status"]["sql_state"] == "42501"
    assert answer["status"]["error"]["message"].startswith("[INSUFFICIENT_PERMISSIONS] ")
    assert answer["status"]["error"]["message"].endswith("SQLSTATE: 42501")


async def test_no_setting_shows_a_host_path(sandboxed: tuple[Api, Path]) -> None:
    api, _ = sandboxed

    answer = await api.execute("SELECT name, value FROM duckdb_settings()")

    values = [value for _, value in answer["result"]["data_array"] if value]
    home = str(Path.home())
    assert not [v for v in values if home in v or str(Path.cwd()) in v], values
