"""Reading a BenchmarkRun manifest file as the cluster would get it (`trainbench run FILE`, `trainbench plan FILE`).

The YAML loader is bounded and strict where kubectl is (sigs.k8s.io/yaml): a duplicate key is an error, dates stay
strings (JSON has no dates), an alias may not refer to the node it is in (a recursive anchor), and at most
MAX_ALIASES aliases and MAX_NODES nodes are read (an anchor bomb is refused before it is expanded). A file holds
one document: a second one would never be read, so it is refused rather than silently ignored. The metadata is
checked as the API server checks it (a name is a DNS-1123 subdomain string). Every refusal is a ManifestError
whose message is one line that names the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainbench.operator.api import API_VERSION, DNS1123_LABEL, DNS1123_SUBDOMAIN, DNS1123_SUBDOMAIN_MAX, KIND

MAX_BYTES = 1024 * 1024  # larger than any BenchmarkRun; the API server's own request limit is 3 MiB
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 64
ROOT_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


class ManifestError(ValueError):
    """A manifest file that is not a usable BenchmarkRun (the message names the problem, one line)."""


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader, bounded: aliases, nodes and depth are counted while composing (before anything is
    expanded), recursive aliases and duplicate keys are refused, timestamps are not resolved."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0
        self._open: list[str] = []  # anchors whose node is being composed
        self._size: dict[int, int] = {}  # id(node) -> nodes it expands to (aliases counted in full)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refers to the node it is in (a recursive anchor)",
                    event.start_mark,
                )  # fmt: skip
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (an anchor bomb?)", event.start_mark
                )
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} nodes", self.peek_event().start_mark)
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if len(self._open) >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._open.append(anchor or "")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.pop()
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        size = 1 + sum(self._size.get(id(child), 1) for child in children)
        if size > MAX_NODES:  # what the document expands to once every alias is copied: an anchor bomb
            raise yaml.composer.ComposerError(
                None, None, f"expands to more than {MAX_NODES} nodes (an anchor bomb?)", event.start_mark
            )
        self._size[id(node)] = size
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class says so
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {str(key)[:64]!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_documents(text: str, where: str = "") -> list[Any]:
    """The non-empty YAML documents of `text`, read with the bounded loader; ManifestError for anything else."""
    prefix = f"{where}: " if where else ""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ManifestError(f"{prefix}larger than {MAX_BYTES} bytes")
    if "\x00" in text:
        raise ManifestError(f"{prefix}not valid YAML (holds a NUL byte)")
    try:
        loader = _Loader(text)
        loader.name = where or "<manifest>"
        try:
            docs = []
            while loader.check_data():
                doc = loader.get_data()
                if doc is not None:
                    docs.append(doc)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ManifestError(f"{prefix}not valid YAML ({_one_line(e)})") from None
    except RecursionError:
        raise ManifestError(f"{prefix}not valid YAML (nested too deeply)") from None
    return docs


def check_metadata(meta: Any, where: str = "") -> tuple[str, str | None, str | None]:
    """(name, namespace, generateName) of a BenchmarkRun's metadata, checked as the API server does."""
    prefix = f"{where}: " if where else ""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ManifestError(f"{prefix}metadata: must be a mapping, got {type(meta).__name__}")
    for key in ("name", "generateName", "namespace"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise ManifestError(f"{prefix}metadata.{key}: must be a string, got {_one_line(repr(value), 40)}")
    name, generate, namespace = meta.get("name") or None, meta.get("generateName") or None, meta.get("namespace")
    if name is not None and (len(name) > DNS1123_SUBDOMAIN_MAX or not re.match(DNS1123_SUBDOMAIN, name)):
        raise ManifestError(
            f"{prefix}metadata.name: {_one_line(repr(name), 72)} is not a valid name (a DNS-1123 subdomain: lowercase "
            f"letters, digits, '-' and '.', starting and ending with a letter or digit, at most "
            f"{DNS1123_SUBDOMAIN_MAX} characters)"
        )
    if name is None and generate is not None:
        stem = generate.rstrip("-")
        if not stem or len(generate) > DNS1123_SUBDOMAIN_MAX - 5 or not re.match(DNS1123_SUBDOMAIN, stem):
            raise ManifestError(f"{prefix}metadata.generateName: {_one_line(repr(generate), 72)} is not a valid prefix")
    if namespace is not None and (len(namespace) > 63 or not re.match(DNS1123_LABEL, namespace)):
        raise ManifestError(f"{prefix}metadata.namespace: {_one_line(repr(namespace), 72)} is not a DNS-1123 label")
    if name is None and generate is None:
        raise ManifestError(f"{prefix}metadata.name (or metadata.generateName) is required")
    return name or generate.rstrip("-"), namespace, None if name else generate


def read_manifest(path: str | Path) -> dict:
    """The one BenchmarkRun document of a manifest file, its root and metadata checked (the spec is parse_spec's)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"{path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    docs = load_documents(text, str(path))
    if not docs:
        raise ManifestError(f"{path}: no {KIND} in the file (it is empty)")
    if len(docs) > 1:
        raise ManifestError(
            f"{path}: holds {len(docs)} YAML documents; a manifest holds one {KIND} (split the file: every document "
            "but the first would never be read)"
        )
    doc = docs[0]
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: no {KIND} in the file (the document is a {type(doc).__name__}, not a mapping)")
    if doc.get("kind") != KIND:
        raise ManifestError(f"{path}: no {KIND} in the file (found kinds: {_one_line(str(doc.get('kind')), 40)})")
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"{path}: apiVersion must be {API_VERSION}, got {_one_line(repr(doc.get('apiVersion')), 60)}"
        )
    for key in doc:
        if key not in ROOT_FIELDS:
            raise ManifestError(f"{path}: {_one_line(str(key), 64)}: unknown field")
    check_metadata(doc.get("metadata"), str(path))
    return doc
