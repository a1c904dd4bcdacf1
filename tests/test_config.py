"""The ``[asyncopy]`` options: the committed sample, the defaults, and the command line reading
them from ``--config-file`` files (flags win; a bad file is one line, exit 2, nothing written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from oslo_config import cfg

from asyncopy import settings
from asyncopy.access import ceph, iscsi
from asyncopy.cinder import config
from asyncopy.core.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DEPTH,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_SPARSE_SIZE,
    CopyOptions,
)
from asyncopy.errors import UsageError
from asyncopy.specs import EndpointOptions
from tests.conftest import MiB, write_pattern
from tests.test_cli import run

SAMPLE = Path(__file__).resolve().parent.parent / "etc" / "asyncopy.conf.sample"
ENTRY_POINT = "asyncopy.cinder.config:list_opts"
REGENERATE = "oslo-config-generator --namespace asyncopy --output-file etc/asyncopy.conf.sample"


def declared() -> list[EntryPoint]:
    return [ep for ep in entry_points(group="oslo.config.opts") if ep.name == "asyncopy"]


def generate(tmp_path: Path) -> str:
    """What ``oslo-config-generator --namespace asyncopy`` writes from the current options."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # stevedore's cache
    out = tmp_path / "asyncopy.conf.sample"
    generator = Path(sys.executable).parent / "oslo-config-generator"
    done = subprocess.run(
        [str(generator), "--namespace", "asyncopy", "--output-file", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_list_opts_is_the_oslo_config_opts_entry_point() -> None:
    assert [ep.value for ep in declared()] == [ENTRY_POINT], "pyproject.toml must declare it"
    assert declared()[0].load() is config.list_opts


def test_the_committed_sample_is_current(tmp_path: Path) -> None:
    sample = generate(tmp_path)
    assert all(f"\n#{opt.dest} = " in sample for opt in config.OPTS)
    assert SAMPLE.read_text() == sample, f"etc/asyncopy.conf.sample is stale: run {REGENERATE}"


def test_the_defaults_are_the_engines_and_the_endpoints() -> None:
    conf = config.load([])
    values = config.group(conf)
    assert values == settings.Settings(
        chunk_size=DEFAULT_CHUNK_SIZE,
        depth=DEFAULT_DEPTH,
        max_inflight=DEFAULT_MAX_INFLIGHT,
        sparse_size=DEFAULT_SPARSE_SIZE,
        verify=False,
        iscsi_transport="brick",
        ceph_conf=None,
        ceph_timeout=ceph.DEFAULT_TIMEOUT,
        iscsi_timeout=iscsi.DEFAULT_TIMEOUT,
        ionice=None,
        root_helper="sudo",
    )
    assert config.copy_options(conf) == CopyOptions()
    assert config.endpoint_options(conf) == EndpointOptions()


def test_the_defaults_need_no_oslo_config_and_show_as_the_sample_does() -> None:
    assert config.group(config.load([])) == settings.DEFAULTS
    for opt in config.OPTS:
        if opt.default is not None:
            shown = str(opt.type.format_defaults(opt.default)[0])
            assert settings.shown_default(opt.dest) == shown, opt.dest
    imports = "import sys, asyncopy.cli; print('oslo_config' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_samples_values_read_back_as_the_defaults(tmp_path: Path) -> None:
    uncommented = tmp_path / "uncommented.conf"
    lines = SAMPLE.read_text().splitlines()
    uncommented.write_text(
        "\n".join(
            line[1:] if line.startswith("#") and " = " in line and "<None>" not in line else line
            for line in lines
        )
    )
    assert "\nchunk_size = 4M\n" in uncommented.read_text()
    assert config.group(config.load([str(uncommented)])) == config.group(config.load([]))


def test_files_and_keywords_fill_the_options(tmp_path: Path) -> None:
    first, second = tmp_path / "first.conf", tmp_path / "second.conf"
    first.write_text(
        "[asyncopy]\nchunk_size = 1M\ndepth = 3\nverify = true\nsparse_size = 3000\n"
        "ceph_conf = /etc/ceph/a.conf\nceph_timeout = 5\niscsi_timeout = 7\n"
        "root_helper = sudo cinder-rootwrap /etc/cinder/rootwrap.conf\n"
    )
    second.write_text("[asyncopy]\nsparse_size = 64K\n")  # later files win
    conf = config.load([str(first), str(second)])
    assert config.copy_options(conf) == CopyOptions(
        chunk_size=MiB, depth=3, sparse_size=64 << 10, verify=True
    )
    values = config.group(conf)
    assert settings.copy_options(values, depth=5, verify=False) == CopyOptions(
        chunk_size=MiB, depth=5, sparse_size=64 << 10
    )
    alone = config.load([str(first)])  # 3000 does not divide 1M: checked after the keywords
    assert settings.copy_options(config.group(alone), sparse_size=4096).sparse_size == 4096
    with pytest.raises(UsageError, match="sparse size 3000 must divide"):
        config.copy_options(alone)
    options = config.endpoint_options(conf)
    assert (options.ceph.conf, options.ceph.timeout, options.iscsi.timeout) == (
        "/etc/ceph/a.conf",
        5.0,
        7,
    )
    assert options.root_helper == "sudo cinder-rootwrap /etc/cinder/rootwrap.conf"
    given = settings.endpoint_options(
        values, "/b.conf", ceph_timeout=9, iscsi_timeout=11, root_helper="doas"
    )
    assert (given.ceph.conf, given.ceph.timeout, given.iscsi.timeout, given.root_helper) == (
        "/b.conf",
        9,
        11,
        "doas",
    )


def test_a_bad_value_in_a_callers_conf_is_a_usage_error(tmp_path: Path) -> None:
    """As Cinder hands over its own ConfigOpts: the value is checked when the group is read."""
    bad = tmp_path / "cinder.conf"
    bad.write_text("[asyncopy]\ndepth = many\n")
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(["--config-file", str(bad)], default_config_files=[], default_config_dirs=[])
    with pytest.raises(UsageError, match=r"^\[asyncopy\] depth: invalid literal for int"):
        config.group(conf)


def test_the_copy_reads_the_config_file_and_flags_win(tmp_path: Path) -> None:
    src, conf = tmp_path / "src.img", tmp_path / "asyncopy.conf"
    image = write_pattern(src, 4 * MiB, [(0, 4096), (3 * MiB, 5000)])
    conf.write_text("[asyncopy]\nchunk_size = 1M\ndepth = 2\nverify = true\n")

    def copy(name: str, *flags: str) -> tuple[dict[str, object], dict[str, object]]:
        """Copy SRC to tmp_path/NAME with the config file; (the JSON result, the manifest)."""
        dst, manifest = tmp_path / name, tmp_path / f"{name}.json"
        done = run(
            "copy", str(src), str(dst), "--config-file", str(conf), "--json",
            "--manifest", str(manifest), *flags,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert dst.read_bytes() == image
        return json.loads(done.stdout), json.loads(manifest.read_text())

    result, digests = copy("dst.img")
    assert result["verified"] is True
    assert digests["chunk_size"] == MiB
    assert len(digests["digests"]) == 4  # type: ignore[arg-type]

    result, digests = copy("dst2.img", "--chunk-size", "2M", "--no-verify")
    assert result["verified"] is False
    assert digests["chunk_size"] == 2 * MiB


def test_a_flag_wins_over_a_config_that_does_not_fit(tmp_path: Path) -> None:
    src, conf, dst = tmp_path / "src.img", tmp_path / "asyncopy.conf", tmp_path / "dst.img"
    write_pattern(src, MiB, [(0, 4096)])
    conf.write_text("[asyncopy]\nsparse_size = 3000\n")
    done = run("copy", str(src), str(dst), "--config-file", str(conf))
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert "sparse size 3000 must divide the chunk size" in done.stderr
    assert not dst.exists()
    assert (
        run(
            "copy", str(src), str(dst), "--config-file", str(conf), "--sparse-size", "4K"
        ).returncode
        == 0
    )


def test_verify_reads_the_chunk_size_from_the_config_file(tmp_path: Path) -> None:
    a, b, conf = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "asyncopy.conf"
    write_pattern(a, 4 * MiB, [(0, 4 * MiB)])
    b.write_bytes(a.read_bytes())
    with open(b, "r+b") as out:
        out.write(b"?")
    conf.write_text("[asyncopy]\nchunk_size = 1M\n")
    done = run("verify", str(a), str(b), "--json", "--config-file", str(conf))
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["differing"] == [{"offset": 0, "length": MiB}]
    done = run("verify", str(a), str(b), "--json", "--config-file", str(conf), "--chunk-size", "2M")
    assert json.loads(done.stdout)["differing"] == [{"offset": 0, "length": 2 * MiB}]


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (None, "not found"),
        ("", "Is a directory"),
        ("[asyncopy\ndepth = 3\n", "line 1: Invalid section (must end with ])"),
        ("[asyncopy]\ngarbage\n", "line 2: No ':' or '=' found in assignment"),
        ("[asyncopy]\ndepth = many\n", "[asyncopy] depth: invalid literal for int()"),
        ("[asyncopy]\ndepth = 0\n", "[asyncopy] depth: Should be greater than or equal to 1"),
        ("[asyncopy]\nchunk_size = 4X\n", "[asyncopy] chunk_size: '4X' is not a size"),
        ("[asyncopy]\nverify = maybe\n", "[asyncopy] verify: Unexpected boolean value 'maybe'"),
        ("[asyncopy]\nceph_timeout = 0\n", "[asyncopy] ceph_timeout: Should be greater than or"),
        ("[asyncopy]\niscsi_transport = kernel\n", "[asyncopy] iscsi_transport: Valid values"),
    ],
)
@pytest.mark.parametrize("command", ["copy", "verify"])
def test_a_bad_config_file_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, command: str, contents: str | None, message: str
) -> None:
    src, dst, good = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "good.conf"
    write_pattern(src, MiB, [(0, 4096)])
    good.write_text("[asyncopy]\nchunk_size = 1M\n")
    bad = tmp_path / "bad.conf"
    if contents == "":
        bad.mkdir()
    elif contents is not None:
        bad.write_text(contents)
    if command == "verify":
        write_pattern(dst, MiB, [(0, 4096)])
    done = run(command, str(src), str(dst), "--config-file", str(good), "--config-file", str(bad))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"asyncopy: error: configuration file {bad}: ")
    assert message in lines[0]
    assert done.stdout == ""
    assert dst.exists() == (command == "verify")
