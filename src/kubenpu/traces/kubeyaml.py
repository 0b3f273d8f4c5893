"""Reader for Kubernetes YAML exports (``kubectl get nodes,pods -o yaml`` or manifests).

Accepts multi-document files and ``kind: List`` documents; Node objects become nodes, Pod
objects become requests. Errors name the file and the line where the object starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kubenpu.adapters.kube import node_from_object, request_from_pod
from kubenpu.errors import InputError, ObjectError
from kubenpu.model import Node, Request


def _objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) for every object in the file, unpacking List documents."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", source=source) from None
    try:
        # The stubs say never None; the guard below stays for other PyYAML versions.
        docs: list[yaml.Node | None] = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        objs = [
            (doc, yaml.SafeLoader("").construct_document(doc)) for doc in docs if doc is not None
        ]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"invalid YAML: {problem}", source=source, line=line) from None
    for doc, obj in objs:
        if obj is None:
            continue  # an empty document, e.g. between two "---" lines
        line = doc.start_mark.line + 1
        if not isinstance(obj, dict):
            raise InputError("a document is not a Kubernetes object", source=source, line=line)
        kind = obj.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise InputError(f"kind must be a string, not {kind!r}", source=source, line=line)
        if kind and kind.endswith("List"):
            items = obj.get("items") or []
            if not isinstance(items, list):
                raise InputError(f"{kind}: items must be a list", source=source, line=line)
            for item_node, item in zip(_items_nodes(doc), items, strict=False):
                item_line = item_node.start_mark.line + 1
                if not isinstance(item, dict):
                    raise InputError(
                        f"an item of the {kind} is not a Kubernetes object",
                        source=source,
                        line=item_line,
                    )
                yield item_line, item
        else:
            yield line, obj


def _items_nodes(doc: yaml.Node) -> list[yaml.Node]:
    for key, value in doc.value:
        if key.value == "items" and isinstance(value, yaml.SequenceNode):
            return list(value.value)
    return []


def read_yaml(path: Path) -> tuple[list[Node], list[Request]]:
    """Nodes and pod requests found in a Kubernetes YAML file (other kinds are skipped)."""
    nodes: list[Node] = []
    pods: list[Request] = []
    seen: dict[tuple[str, str], int] = {}
    for line, obj in _objects(path):
        kind = obj.get("kind")
        try:
            if kind == "Node":
                nodes.append(node_from_object(obj))
                name = nodes[-1].name
            elif kind == "Pod":
                pods.append(request_from_pod(obj))
                name = pods[-1].name
            else:
                continue
        except (ObjectError, InputError) as exc:
            problem = exc.problem if isinstance(exc, InputError) else str(exc)
            raise InputError(problem, source=str(path), line=line) from None
        first = seen.setdefault((kind, name), line)
        if first != line:
            raise InputError(
                f"{kind} {name!r} appears twice (first at line {first})",
                source=str(path),
                line=line,
            )
    return nodes, pods


def is_yaml(path: Path) -> bool:
    """Whether a file name says YAML (anything else is read as an openb CSV)."""
    return path.suffix.lower() in (".yaml", ".yml")
