"""gRPC fan-out's Records message: streamcar's hand-written codec against protobuf's own, on docs/records.proto."""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamcar.call import records_pb
from streamcar.event import KEEP_KEY, Record

DOCS = Path(__file__).resolve().parents[2] / "docs"


@functools.cache
def compiled() -> ModuleType:
    protoc = importlib.import_module("grpc_tools.protoc")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="streamcar-records-") as out:
        assert protoc.main(["protoc", f"-I{DOCS}", f"-I{well_known}", f"--python_out={out}", "records.proto"]) == 0
        spec = importlib.util.spec_from_file_location("records_pb2", Path(out) / "records_pb2.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


KEYS = st.one_of(st.just(KEEP_KEY), st.none(), st.binary(max_size=8))
RECORDS = st.builds(
    Record,
    st.binary(max_size=16),
    key=KEYS,
    headers=st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=3).map(tuple),
    topic=st.one_of(st.none(), st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
)


@given(st.lists(RECORDS, max_size=5))
def test_what_protobuf_writes_streamcar_reads(records: list[Record]) -> None:
    pb = compiled()
    message = pb.Records()
    for record in records:
        item = message.records.add(value=record.value or b"", topic=record.topic or "")
        if record.key is None:
            item.null_key = True
        elif record.key is not KEEP_KEY:
            item.key = record.key
        for name, value in record.headers:
            item.headers.add(name=name, value=value or b"")
    assert records_pb.decode(message.SerializeToString()) == records


@given(st.lists(RECORDS, max_size=5))
def test_what_streamcar_writes_protobuf_reads_back_the_same(records: list[Record]) -> None:
    parsed = compiled().Records.FromString(records_pb.encode(records))
    assert len(parsed.records) == len(records)
    assert records_pb.decode(parsed.SerializeToString()) == records


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x0f", b"\x0a\x02\x1a\x05"])
def test_a_broken_message_is_an_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(records_pb.RecordsError):
        records_pb.decode(data)
