"""Batch manifests: TOML, JSON lines and plain URL lists, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncfetch import InvalidRequest, Source
from asyncfetch._batch.manifest import parse_manifest, read_manifest, sniff

DIGEST = "ab" * 32

TOML = f"""
# a model zoo
[[file]]
url = "https://example.org/resnet50.pth"
mirrors = ["https://mirror.example.org/resnet50.pth", "http://127.0.0.1:8/r.pth"]
sha256 = "{DIGEST}"
dest = "models/resnet50.pth"

[[file]]
url = "https://example.org/vit.safetensors"
name = "vit-b16.safetensors"
"""

EXPECTED = [
    Source(
        "https://example.org/resnet50.pth",
        mirrors=("https://mirror.example.org/resnet50.pth", "http://127.0.0.1:8/r.pth"),
        sha256=DIGEST,
        dest="models/resnet50.pth",
    ),
    Source("https://example.org/vit.safetensors", name="vit-b16.safetensors"),
]


def test_toml(tmp_path: Path) -> None:
    path = tmp_path / "zoo.toml"
    path.write_text(TOML)
    assert read_manifest(path) == EXPECTED


def test_json_lines(tmp_path: Path) -> None:
    lines = [
        "# comments and blank lines are skipped",
        json.dumps(
            {
                "url": EXPECTED[0].url,
                "mirrors": list(EXPECTED[0].mirrors),
                "sha256": DIGEST,
                "dest": "models/resnet50.pth",
            }
        ),
        "",
        json.dumps({"url": EXPECTED[1].url, "name": "vit-b16.safetensors"}),
        json.dumps("https://example.org/plain.bin"),
    ]
    path = tmp_path / "zoo.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert read_manifest(path) == [*EXPECTED, Source("https://example.org/plain.bin")]


def test_plain_url_list(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_text("# shards\nhttps://h/a-00001.bin\n\n  https://h/a-00002.bin  \n")
    assert read_manifest(path) == [Source("https://h/a-00001.bin"), Source("https://h/a-00002.bin")]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[[file]]\nurl = 'x'", "toml"),
        ("\n# c\nfile = [{url = 'x'}]", "toml"),
        ('{"url": "x"}', "jsonl"),
        ('"https://h/x"', "jsonl"),
        ("https://h/x?a=b", "urls"),
        ("http://h/x=y", "urls"),
        ("", "urls"),
    ],
)
def test_format_is_sniffed_without_a_telling_suffix(text: str, kind: str) -> None:
    assert sniff(text) == kind


def test_sniffed_toml_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "zoo.manifest"
    path.write_text(TOML)
    assert read_manifest(path) == EXPECTED


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.jsonl", '{"url": "https://h/a"}\n{"url": "https://h/b", "sha265": "x"}\n', ":2: "),
        ("m.jsonl", '{"url": "https://h/a"}\n{not json\n', ":2: not valid JSON"),
        ("m.jsonl", "[1, 2]\n", "expected a URL or a table/object"),
        ("m.jsonl", '{"mirrors": []}\n', "no url"),
        ("m.txt", "https://h/a\nhttps://h/b sha256\n", ":2: expected one URL per line"),
        ("m.txt", "https://h/a\nftp://h/b\n", ":2: 'ftp://h/b': unsupported scheme"),
        ("m.txt", "# nothing\n", "lists no files"),
        ("m.toml", "[[file]]\nurl = 'https://h/a'\nsha256 = 'abc'\n", "file #1: sha256 must"),
        ("m.toml", "[[file]]\nurl = 'https://h/a'\nmirrors = ['nope']\n", "is not a full URL"),
        ("m.toml", "[[file]\n", "not valid TOML"),
        ("m.toml", "[[model]]\nurl = 'https://h/a'\n", "unknown top-level key(s) ['model']"),
        ("m.toml", "[[file]]\nurl = 'https://h/a'\nname = 'a/b'\n", "plain file name"),
    ],
)
def test_errors_name_the_file_and_the_place(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidRequest) as caught:
        read_manifest(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.toml")


def test_parse_with_an_explicit_kind() -> None:
    assert parse_manifest('"https://h/a"', kind="jsonl") == [Source("https://h/a")]
