"""Wire models tolerate what the server may send: omitted zeros, numeric strings, new values."""

from __future__ import annotations

from dbx_backend.warehouse.wire import ResultData, StatementResponse


def test_omitted_fields_take_their_zero_values() -> None:
    response = StatementResponse.model_validate(
        {
            "statement_id": "s",
            "status": {"state": "SUCCEEDED"},
            "manifest": {"schema": {"columns": [{"name": "a"}]}},
            "result": {},
        }
    )

    assert response.manifest is not None
    assert response.manifest.total_row_count == 0
    assert response.manifest.truncated is False
    assert response.manifest.schema_.columns[0].position == 0
    assert response.result is not None
    assert response.result.row_offset == 0
    assert response.result.data_array is None


def test_int64_fields_may_arrive_as_numeric_strings() -> None:
    chunk = ResultData.model_validate({"row_offset": "188416", "row_count": "3", "byte_count": 7})

    assert (chunk.row_offset, chunk.row_count, chunk.byte_count) == (188416, 3, 7)


def test_unknown_states_type_names_and_fields_are_kept_or_ignored() -> None:
    response = StatementResponse.model_validate(
        {
            "statement_id": "s",
            "status": {"state": "SOMETHING_NEW", "new_field": 1},
            "manifest": {
                "schema": {
                    "columns": [
                        {"name": "t", "type_name": "TIMESTAMP_NTZ", "type_text": "TIMESTAMP_NTZ"},
                        {"name": "g", "type_name": "GEOMETRY", "type_text": "GEOMETRY(4326)"},
                    ]
                },
                "format": "SOME_FORMAT",
            },
            "brand_new": {"x": 1},
        }
    )

    assert response.status.state == "SOMETHING_NEW"
    assert response.manifest is not None
    assert [c.type_name for c in response.manifest.schema_.columns] == ["TIMESTAMP_NTZ", "GEOMETRY"]


def test_next_pointers_are_read_from_the_links_too() -> None:
    chunk = ResultData.model_validate(
        {
            "external_links": [
                {
                    "external_link": "https://store.example/0",
                    "next_chunk_index": 1,
                    "next_chunk_internal_link": "/api/2.0/sql/statements/s/result/chunks/1",
                }
            ]
        }
    )

    assert chunk.next_pointer() == (1, "/api/2.0/sql/statements/s/result/chunks/1")


def test_a_link_never_shows_its_url() -> None:
    chunk = ResultData.model_validate(
        {
            "external_links": [
                {
                    "external_link": "https://store.example/0?X-Amz-Signature=secret",
                    "http_headers": {"x-key": "secret"},
                }
            ]
        }
    )

    assert "secret" not in repr(chunk.external_links)
