"""The openb CSV readers: shapes, errors with file and line, and the shared trace itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openb_trace import OPENB, require_openb

from kubenpu.errors import InputError
from kubenpu.names import LABEL_NPU_MODEL
from kubenpu.traces import openb

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def nodes_csv(tmp_path: Path, *rows: str) -> Path:
    return write(tmp_path, "\n".join([NODE_HEADER, *rows]) + "\n", "nodes.csv")


def pods_csv(tmp_path: Path, *rows: str) -> Path:
    return write(tmp_path, "\n".join([POD_HEADER, *rows]) + "\n", "pods.csv")


def error_of(fn, path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        fn(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(str(path))
    return info.value


# --- nodes ------------------------------------------------------------------------------


def test_read_nodes(tmp_path):
    path = nodes_csv(
        tmp_path, "a,64000,262144,2,P100", "b,96000,786432,8,V100M32", "c,32000,1024,0,"
    )
    a, b, c = openb.read_nodes(path)
    assert (a.name, a.cpu_milli, a.memory_mib, a.model) == ("a", 64000, 262144, "P100")
    assert [d.id for d in a.devices] == ["a-npu0", "a-npu1"]
    assert a.labels == {LABEL_NPU_MODEL: "P100"}
    assert len(b.devices) == 8 and {d.model for d in b.devices} == {"V100M32"}
    assert c.devices == () and c.labels == {} and c.model == ""


def test_whole_number_floats_and_extra_columns_are_fine(tmp_path):
    path = write(tmp_path, "model,gpu,sn,memory_mib,cpu_milli,extra\nT4, 2.0 ,x,10.0,1e3,zz\n")
    (n,) = openb.read_nodes(path)
    assert (n.name, n.cpu_milli, n.memory_mib, len(n.devices), n.model) == ("x", 1000, 10, 2, "T4")


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + NODE_HEADER + "\na,1,1,1,T4\n").encode())
    assert openb.read_nodes(path)[0].name == "a"


@pytest.mark.parametrize(
    ("row", "line", "match"),
    [
        ("a,x,1,1,T4", 3, "column 'cpu_milli': 'x' is not a number"),
        ("a,1,-5,1,T4", 3, "column 'memory_mib': '-5' is negative"),
        ("a,1,1,1.5,T4", 3, "column 'gpu': '1.5' is not a whole number"),
        ("a,1,1,nan,T4", 3, "not a whole number"),
        ("a,1,1,inf,T4", 3, "not a whole number"),
        ("a,1,1,,T4", 3, "column 'gpu': '' is not a number"),
        ("a,1,1", 3, "column 'gpu'"),
        (",1,1,1,T4", 3, "empty node name"),
        ("a,1e30,1,1,T4", 3, "too large"),
        ("ok,1,1,1,T4", 3, "node 'ok' appears twice (first at line 2)"),
        ("a,1,1,1000000000,T4", 3, "column 'gpu': 1000000000 devices on one node (at most 64)"),
    ],
)
def test_node_errors_name_file_and_line(tmp_path, row, line, match):
    path = nodes_csv(tmp_path, "ok,1,1,1,T4", row)
    exc = error_of(openb.read_nodes, path)
    assert exc.line == line
    assert match in exc.problem
    assert str(exc) == f"{path}:{line}: {exc.problem}"


def test_missing_column(tmp_path):
    path = write(tmp_path, "sn,cpu_milli,gpu,model\na,1,1,T4\n")
    exc = error_of(openb.read_nodes, path)
    assert exc.line == 1
    assert "missing column(s) memory_mib" in exc.problem


@pytest.mark.parametrize("text", ["", NODE_HEADER + "\n"])
def test_empty_files(tmp_path, text):
    exc = error_of(openb.read_nodes, write(tmp_path, text))
    assert "missing column" in exc.problem or "no nodes" in exc.problem


def test_unreadable_files(tmp_path):
    exc = error_of(openb.read_nodes, tmp_path / "absent.csv")
    assert "cannot read file" in exc.problem
    exc = error_of(openb.read_pods, tmp_path)  # a directory
    assert "cannot read file" in exc.problem
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\n")
    exc = error_of(openb.read_nodes, binary)
    assert "CSV" in exc.problem


# --- pods -------------------------------------------------------------------------------


def test_read_pods(tmp_path):
    path = pods_csv(
        tmp_path,
        "whole,8000,16384,1,1000,,LS",
        "multi,24000,65536,4,1000,V100M16|V100M32,BE",
        "share,4000,8192,1,460,,LS",
        "cpu,2000,4096,0,0,,BE",
        "pinned,1,1,1,250, A10 | T4 |,LS",
    )
    whole, multi, share, cpu, pinned = openb.read_pods(path)
    assert (whole.npus, whole.share_milli, whole.device_milli, whole.models) == (
        1,
        0,
        1000,
        frozenset(),
    )
    assert (multi.npus, multi.device_milli, multi.models) == (4, 4000, {"V100M16", "V100M32"})
    assert (multi.cpu_milli, multi.memory_mib) == (24000, 65536)
    assert (share.npus, share.share_milli, share.device_milli) == (0, 460, 460)
    assert (cpu.device_milli, cpu.wants_devices) == (0, False)
    assert pinned.models == {"A10", "T4"}


def test_gpu_spec_column_is_optional(tmp_path):
    path = write(tmp_path, "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,2,1000\n")
    assert openb.read_pods(path)[0].models == frozenset()


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("p,1,1,9,1000,,LS", "9 devices in one pod (at most 8)"),
        ("p,1,1,1,1001,,LS", "1001 is more than one device"),
        ("p,1,1,2,500,,LS", "2 devices must be whole (1000), got 500"),
        ("p,1,1,0,300,,LS", "300 milli asked with num_gpu 0"),
        ("p,1,1,1,0,,LS", "num_gpu 1 with a share of 0"),
        ("p,-1,1,1,1000,,LS", "'cpu_milli': '-1' is negative"),
        ("p,1,lots,1,1000,,LS", "'memory_mib': 'lots' is not a number"),
        (",1,1,1,1000,,LS", "empty pod name"),
        ("first,1,1,1,1000,,LS", "pod 'first' appears twice (first at line 2)"),
    ],
)
def test_pod_errors_name_file_and_line(tmp_path, row, match):
    path = pods_csv(tmp_path, "first,1,1,1,1000,,LS", row)
    exc = error_of(openb.read_pods, path)
    assert exc.line == 3
    assert match in exc.problem


def test_pod_missing_columns(tmp_path):
    path = write(tmp_path, "name,cpu_milli\np,1\n")
    exc = error_of(openb.read_pods, path)
    assert exc.line == 1
    assert "memory_mib, num_gpu, gpu_milli" in exc.problem


def test_no_pods(tmp_path):
    exc = error_of(openb.read_pods, pods_csv(tmp_path))
    assert exc.problem == "no pods in file"


def test_line_numbers_count_quoted_newlines(tmp_path):
    path = pods_csv(tmp_path, 'a,1,1,1,1000,,"L\nS"', "b,1,1,x,1000,,LS")
    assert error_of(openb.read_pods, path).line == 4


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.integers(0, 10**7),
            st.sampled_from([(0, 0), (1, 1000), (2, 1000), (8, 1000), (1, 1), (1, 999), (1, 500)]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_pod_round_trip(tmp_path, rows):
    lines = [f"p{i},{c},{m},{n},{g},," for i, (c, m, (n, g)) in enumerate(rows)]
    pods = openb.read_pods(write(tmp_path, "\n".join([POD_HEADER, *lines]) + "\n", "rt.csv"))
    assert [p.name for p in pods] == [f"p{i}" for i in range(len(rows))]
    for p, (c, m, (n, g)) in zip(pods, rows, strict=True):
        assert (p.cpu_milli, p.memory_mib) == (c, m)
        assert p.device_milli == n * g
        assert (p.npus > 0) == (g == 1000)


# --- files cut short or damaged --------------------------------------------------------

PODS_TAIL = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,1000\nb,1,1,1,1000"


def test_whole_last_row_without_a_newline_is_cut(tmp_path):
    # The last line `...,1,10` reads as a valid 10-milli share: only its missing line break
    # (every other line has one) gives the cut away, and it must stop the run.
    path = write(tmp_path, PODS_TAIL[:-2])
    exc = error_of(openb.read_pods, path)
    assert exc.line == 3
    assert "cut short" in exc.problem
    # The very same rows, whole and ended, are fine.
    assert [p.device_milli for p in openb.read_pods(write(tmp_path, PODS_TAIL + "\n"))] == [
        1000,
        1000,
    ]


def test_header_only_file_without_newline_is_not_cut(tmp_path):
    # No line has a break, so none is missing one.
    exc = error_of(openb.read_pods, write(tmp_path, "name,cpu_milli,memory_mib,num_gpu,gpu_milli"))
    assert exc.problem == "no pods in file"


def test_row_with_fewer_or_more_fields_than_the_header(tmp_path):
    exc = error_of(openb.read_pods, pods_csv(tmp_path, "a,1,1,1,1000,,LS", "b,1,1,1,1000"))
    assert exc.line == 3
    assert exc.problem == "5 of the header's 7 fields: column 'gpu_spec' is missing (a cut row?)"
    exc = error_of(openb.read_pods, pods_csv(tmp_path, "a,1,1,1,1000,,LS,extra"))
    assert exc.line == 2
    assert "8 fields, the header has 7" in exc.problem


@pytest.mark.parametrize("cut", ["P1", "V100M3", "G"])
def test_node_model_cut_short_is_an_unknown_model(tmp_path, cut):
    path = nodes_csv(tmp_path, "a,64000,262144,2,P100", f"b,64000,262144,2,{cut}")
    exc = error_of(openb.read_nodes, path)
    assert exc.line == 3
    assert f"column 'model': unknown device model {cut!r} (known: A10, G2" in exc.problem


def test_known_models_and_empty_model_with_devices(tmp_path):
    path = nodes_csv(tmp_path, *(f"n{m},1,1,1,{m}" for m in sorted(openb.KNOWN_MODELS)))
    assert {n.model for n in openb.read_nodes(path)} == openb.KNOWN_MODELS
    exc = error_of(openb.read_nodes, nodes_csv(tmp_path, "a,1,1,2,"))
    assert exc.problem == "column 'model': empty, but the node has 2 devices"
    exc = error_of(openb.read_pods, pods_csv(tmp_path, "p,1,1,1,1000,T4|V100M3,LS"))
    assert "column 'gpu_spec': unknown device model 'V100M3'" in exc.problem


def test_unterminated_quote(tmp_path):
    path = pods_csv(tmp_path, "a,1,1,1,1000,,LS", 'b,1,1,1,1000,"T4,LS', "c,1,1,1,1000,,LS")
    exc = error_of(openb.read_pods, path)
    assert exc.line == 3
    assert exc.problem == "a quoted value opened in this row is never closed"
    exc = error_of(openb.read_pods, pods_csv(tmp_path, 'a,1,1,1,1000,"T4"x,LS'))
    assert exc.line == 2 and "malformed CSV" in exc.problem


def test_nul_bytes_and_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(f"{NODE_HEADER}\na,1,1,1,T4\nb,1,1,1\x00,T4\n".encode())
    exc = error_of(openb.read_nodes, path)
    assert (exc.line, exc.problem) == (3, "NUL byte: not CSV text (a binary or damaged file?)")
    path.write_bytes(f"{NODE_HEADER}\na,1,1,1,T4\n".encode() + b"b\xe9,1,1,1,T4\n")
    exc = error_of(openb.read_nodes, path)
    assert (exc.line, exc.problem) == (3, "not UTF-8 CSV text (byte 0xe9)")


@pytest.mark.parametrize("raw", ["1_000", "\u0661\u0662", "0x10", "1e3.5"])
def test_numbers_parse_strictly(tmp_path, raw):
    exc = error_of(openb.read_nodes, nodes_csv(tmp_path, f"a,{raw},1,1,T4"))
    assert exc.line == 2
    assert f"column 'cpu_milli': {raw!r} is not" in exc.problem


# --- the shared trace -------------------------------------------------------------------


@pytest.fixture
def needs_openb() -> None:
    require_openb()


@pytest.mark.usefixtures("needs_openb")
def test_shared_cluster_matches_its_readme():
    nodes = openb.read_nodes(OPENB / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213
    assert sum(len(n.devices) for n in nodes) == 6212
    assert all(n.devices and n.model for n in nodes)


@pytest.mark.usefixtures("needs_openb")
def test_shared_default_workload():
    pods = openb.read_pods(OPENB / "openb_pod_list_default.csv")
    assert len(pods) == 8152
    assert len({p.name for p in pods}) == 8152
    assert {p.npus for p in pods} <= set(range(9))
    assert all(0 <= p.share_milli < 1000 for p in pods)
    assert any(p.share_milli for p in pods) and any(p.npus > 1 for p in pods)
