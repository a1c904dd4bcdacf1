"""The tempest plugin's parts that need no deployment: the data it writes and compares, its
``[asyncopy]`` options, its results lines."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from oslo_config import cfg

from asyncopy_tempest import cli, pattern, results
from asyncopy_tempest.plugin import AsyncopyTempestPlugin

MiB = pattern.MiB
GiB = 1 << 30


def image_of(model: pattern.Model) -> bytearray:
    image = bytearray(model.size)
    for offset, data in pattern.pieces(model.extents):
        image[offset : offset + len(data)] = data
    return image


@pytest.mark.parametrize(("size", "data"), [(GiB, 24 * MiB + 12345), (2 * GiB, 256 * MiB)])
def test_layout_scatters_the_data_at_odd_offsets_from_first_to_last_mib(
    size: int, data: int
) -> None:
    extents = pattern.layout(size, data, seed=5)
    assert sum(extent.length for extent in extents) == data
    assert all(extent.offset % 2 == 1 for extent in extents)
    assert all(left.end < right.offset for left, right in itertools.pairwise(extents))
    assert extents[0].end < MiB
    assert size - MiB < extents[-1].offset
    assert extents[-1].end < size
    assert pattern.layout(size, data, seed=5) == extents
    assert pattern.layout(size, data, seed=6) != extents


def test_layout_refuses_data_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        pattern.layout(16 * MiB, 15 * MiB, seed=1)


def test_model_digests_are_those_of_the_image_holes_included() -> None:
    model = pattern.build_model(48 * MiB + 4096, 3 * MiB + 1, seed=2)
    image = image_of(model)
    assert model.digests == pattern.model_digests(model.size, model.extents)
    assert len(model.digests) == 49
    last = memoryview(image)[48 * MiB :]
    assert model.digests[-1] == pattern.zero_digest(4096) != pattern.zero_digest(MiB)
    assert bytes(last) == bytes(4096)


@pytest.mark.parametrize("where", ["first", "hole", "extent", "last"])
def test_first_difference_names_the_byte(where: str) -> None:
    model = pattern.build_model(40 * MiB, 2 * MiB + 3, seed=3)
    image = image_of(model)

    def read(offset: int, length: int) -> bytes:
        return bytes(image[offset : offset + length])

    assert pattern.first_difference(model, read) is None
    middle = model.extents[1]
    offset = {
        "first": model.extents[0].offset,
        "hole": middle.offset - 7,
        "extent": middle.offset + middle.length // 2,
        "last": model.size - 1,
    }[where]
    image[offset] ^= 0x40
    assert pattern.first_difference(model, read) == offset


def test_first_difference_of_a_short_volume_is_where_it_ends() -> None:
    model = pattern.build_model(40 * MiB, 2 * MiB, seed=4)
    image = image_of(model)[: 30 * MiB + 5]
    assert pattern.first_difference(model, lambda o, n: bytes(image[o : o + n])) == 30 * MiB + 5


def test_the_plugin_registers_its_group_with_help() -> None:
    conf = cfg.ConfigOpts()
    AsyncopyTempestPlugin().register_opts(conf)
    conf([], default_config_files=[])
    group = conf.asyncopy
    assert (group.manager, group.results_file, group.throttled_backend, group.progress_data) == (
        "asyncopy",
        "",
        "",
        256,
    )
    [(name, opts)] = AsyncopyTempestPlugin().get_opt_lists()
    assert name == "asyncopy"
    assert all(opt.help for opt in opts)
    with pytest.raises(ValueError, match="stock"):
        conf.set_override("manager", "other", group="asyncopy")


def test_the_plugin_loads_its_tests_from_its_own_package() -> None:
    test_dir, top = AsyncopyTempestPlugin().load_tests()
    assert Path(test_dir, "tests", "test_migration.py").is_file()
    assert Path(test_dir).parent == Path(top)


def test_a_measurement_is_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    figures = results.Measurement(
        "test_x", "migrate", "asyncopy", "ceph", "nfs", GiB, 5, 1.5, 6, 7, True, None
    )
    results.append(str(path), figures)
    results.append(str(path), figures)
    results.append("", figures)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["destination_backend"] == "nfs"
    assert json.loads(lines[0])["progress_seen"] is None


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"migration_progress": "37% (1 of 2 bytes)", "x": "y"}, "37% (1 of 2 bytes)"),
        ({"x": "y"}, None),
        ("migration_progress='5%', x='y'", "migration_progress='5%', x='y'"),
        ("", None),
        (None, None),
    ],
)
def test_a_property_is_read_from_either_form_the_client_shows(
    properties: object, expected: str | None
) -> None:
    assert cli.property_of({"properties": properties}, "migration_progress") == expected


def test_allocation_is_counted_in_whole_units() -> None:
    ranges = [(1, 10), (4096 - 1, 2), (5 * 4096, 4096), (5 * 4096 + 100, 1), (9 * 4096, 0)]
    assert pattern.grained(ranges, 4096) == 3 * 4096
    assert pattern.grained(ranges, 4 * MiB) == 4 * MiB
    assert pattern.grained([], 4096) == 0
