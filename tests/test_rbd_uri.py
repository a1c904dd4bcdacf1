"""The rbd: URI, in qemu's syntax (no cluster needed)."""

from __future__ import annotations

import pytest

from asyncopy.access.ceph import RbdSpec, parse_rbd
from asyncopy.core.endpoint import Extent, ExtentKind
from asyncopy.errors import UsageError
from asyncopy.sources.rbd import fill_holes
from asyncopy.specs import parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rbd/vol", RbdSpec(pool="rbd", image="vol")),
        ("rbd/vol@snap1", RbdSpec(pool="rbd", image="vol", snapshot="snap1")),
        ("rbd/ns/vol", RbdSpec(pool="rbd", namespace="ns", image="vol")),
        (
            "volumes/volume-1@s:conf=/etc/ceph/a.conf:id=cinder:keyring=/k",
            RbdSpec(
                pool="volumes",
                image="volume-1",
                snapshot="s",
                conf="/etc/ceph/a.conf",
                user="cinder",
                keyring="/k",
            ),
        ),
        (
            r"rbd/vol:mon_host=[v2\:127.0.0.1\:3300]",
            RbdSpec(pool="rbd", image="vol", options=(("mon_host", "[v2:127.0.0.1:3300]"),)),
        ),
    ],
)
def test_parse_accepts_qemu_syntax(text: str, expected: RbdSpec) -> None:
    assert parse_rbd(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected rbd:POOL/"),
        ("pool", "expected rbd:POOL/"),
        ("a/b/c/d", "expected rbd:POOL/"),
        ("pool/", "expected rbd:POOL/"),
        ("pool/img@", "bad snapshot name"),
        ("pool/img:conf", "needs the form key=value"),
        ("pool/img:=x", "needs the form key=value"),
        ("pool/img:key=", "needs the form key=value"),
    ],
)
def test_parse_rejects_bad_uris(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_rbd(text)


def test_messages_name_the_image_never_option_values() -> None:
    spec = parse_rbd("rbd/vol@s:key=AQBsecretsecret==:conf=/c:id=admin:keyring=/k")
    assert str(spec) == "rbd:rbd/vol@s"
    assert "AQBsecret" not in repr(spec)
    assert "/k" not in repr(spec)
    for text in ["rbd/vol:key=AQBsecret==:oops", ":key=AQBsecret", "rbd/vol:key=AQBsecret\\"]:
        with pytest.raises(UsageError) as bad:
            parse_rbd(text)
        assert "AQBsecret" not in str(bad.value)


@pytest.mark.parametrize(
    "text", ["rbd/img\n", "rbd/img@a@b", "rbd/img@s/x", "rbd/img@ ", "rbd/i mg"]
)
def test_names_are_checked_whole(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rbd(text)


def test_timeouts_are_not_uri_options() -> None:
    with pytest.raises(UsageError, match="--ceph-timeout"):
        parse_rbd("rbd/vol:rados_osd_op_timeout=0")


def test_rbd_is_a_known_scheme() -> None:
    assert parse("rbd:rbd/vol") == ("rbd", "rbd/vol")


def test_fill_holes_clips_and_fills_gaps() -> None:
    found = [(0, 10, True), (4096, 8192, True), (20000, 5000, False), (30000, 10**6, True)]
    assert fill_holes(100, 40000, found) == [
        Extent(100, 3996, ExtentKind.HOLE),
        Extent(4096, 8192, ExtentKind.DATA),
        Extent(12288, 17712, ExtentKind.HOLE),
        Extent(30000, 10100, ExtentKind.DATA),
    ]
    assert fill_holes(0, 5, []) == [Extent(0, 5, ExtentKind.HOLE)]
