"""The strict jsonl reader of benchmark and job files: records in file order with their line numbers,
blank lines skipped but counted, and every error naming `path:line` and what is wrong."""

import pytest

from synergen_jax.core.errors import DataError
from synergen_jax.data import jsonl


def _write(tmp_path, text, name="recs.jsonl"):
  path = tmp_path / name
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


def test_records_keep_their_line_numbers_across_blank_lines(tmp_path):
  path = _write(tmp_path, '\n{"a": 1}\n   \n\t\n{"a": 2, "b": "x"}\r\n\n')
  lines = list(jsonl.records(path, required=("a",)))
  assert [(l.number, l.record) for l in lines] == [(2, {"a": 1}), (5, {"a": 2, "b": "x"})]
  assert [l.where for l in lines] == [f"{path}:2", f"{path}:5"]
  where, number, record = lines[0]           # unpacks as a tuple
  assert (where, number, record) == (f"{path}:2", 2, {"a": 1})


@pytest.mark.parametrize("text,message", [
    ('{"a": 1}\n\n{not json\n', r"recs.jsonl:3: not JSON \(Expecting property name"),
    ('{"a": 1}\n["a", 1]\n', r"recs.jsonl:2: expected an object, got list"),
    ('"x"\n', r"recs.jsonl:1: expected an object, got str"),
    ('{"a": 1}\n{"b": 2}\n', r"recs.jsonl:2: missing \"a\""),
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"recs.jsonl:2: not UTF-8 \(bytes b'\\xe9' at column 11\)"),
])
def test_errors_name_the_file_and_line(tmp_path, text, message):
  path = _write(tmp_path, text)
  with pytest.raises(DataError, match=message) as e:
    list(jsonl.records(path, required=("a",)))
  assert str(e.value).startswith(path + ":")


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_a_file_without_records_is_refused_by_name(tmp_path, text):
  path = _write(tmp_path, text)
  with pytest.raises(DataError, match=r"^.*recs.jsonl: no records$"):
    list(jsonl.records(path))


def test_records_are_checked_as_they_come(tmp_path):
  """A caller that refuses a record stops at it: a bad line further on is not read first."""
  path = _write(tmp_path, '{"a": 1}\n{not json\n')
  first = next(jsonl.records(path))
  assert first.record == {"a": 1}
