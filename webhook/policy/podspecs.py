"""Where images live: the pod spec of each kind we judge, its containers and its image volumes.

Objects stay raw dicts as they arrived. JSON decoding gives plain ``dict`` and ``list``, and
an exact ``dict`` check is much cheaper than an ABC ``Mapping`` check on the hot path. A
shape we cannot read is reported as a ``MalformedObject`` naming the field, because an
object we cannot judge must never be silently allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# An OCI image volume (``volumes[i].image.reference``) is pulled by the kubelet like a
# container image, so it is an image site too; a volume without ``image`` is another type.
VOLUMES = "volumes"
IMAGE_LISTS = (*CONTAINER_LISTS, VOLUMES)

_TEMPLATE = ("spec", "template", "spec")
# kind -> (every API group that has served it, path from the object root to its pod spec).
# Versions are not looked at: every version of a kind keeps its pod spec in the same place,
# and a kind left out of a group here would be admitted unjudged in that group. The
# ``extensions`` group served Deployments, DaemonSets, ReplicaSets and, before batch, Jobs.
_WORKLOAD_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pod": (("",), ("spec",)),
    "PodTemplate": (("",), ("template", "spec")),
    "ReplicationController": (("",), _TEMPLATE),
    "Deployment": (("apps", "extensions"), _TEMPLATE),
    "ReplicaSet": (("apps", "extensions"), _TEMPLATE),
    "StatefulSet": (("apps",), _TEMPLATE),
    "DaemonSet": (("apps", "extensions"), _TEMPLATE),
    "Job": (("batch", "extensions"), _TEMPLATE),
    "CronJob": (("batch",), ("spec", "jobTemplate", "spec", "template", "spec")),
}
# (API group, kind) -> path from the object root to its pod spec.
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    (group, kind): path for kind, (groups, path) in _WORKLOAD_KINDS.items() for group in groups
}


class MalformedObject(ValueError):
    """The object's shape prevents judging it; ``field`` is the path that is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ImageSite(NamedTuple):
    """One container image or image volume. A tuple, because a Pod of 100 containers builds 100
    of them per request, and its ``field`` (``spec.containers[1]``) is only spelt out for a message."""

    prefix: str
    list_name: str  # one of IMAGE_LISTS
    position: int  # in its list (``index`` would hide tuple.index)
    name: str  # of the container or the volume
    image: str

    @property
    def is_volume(self) -> bool:
        return self.list_name == VOLUMES

    @property
    def field(self) -> str:
        """A container by its place (``spec.containers[1]``), as messages always named it; a
        volume by the field that holds the image (``spec.volumes[2].image.reference``)."""
        if self.list_name == VOLUMES:
            return f"{self.prefix}.{VOLUMES}[{self.position}].image.reference"
        return f"{self.prefix}.{self.list_name}[{self.position}]"

    @property
    def image_path(self) -> tuple[str | int, ...]:
        """The image as a path of keys, relative to the pod spec."""
        if self.list_name == VOLUMES:
            return (VOLUMES, self.position, "image", "reference")
        return (self.list_name, self.position, "image")


# ImageSite(...) runs the generated Python __new__; tuple.__new__ builds the same tuple in C, in
# half the time, which a 50-container Pod notices (judged on every review).
_new_site = tuple.__new__


def pod_spec_path(group: str, kind: str) -> tuple[str, ...] | None:
    """Where ``kind`` of ``group`` keeps its pod spec, in any version; None for kinds without one."""
    return POD_SPEC_PATHS.get((group, kind))


def find_pod_spec(obj: Any, path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """Follow ``path``; None when a level is absent, MalformedObject when it is not an object."""
    if not isinstance(obj, dict):
        raise MalformedObject("object", "is not a JSON object")
    node: Mapping[str, Any] = obj
    for depth, key in enumerate(path):
        child = node.get(key)
        if child is None:
            return None
        if not isinstance(child, dict):
            raise MalformedObject(".".join(path[: depth + 1]), "is not an object")
        node = child
    return node


def iter_image_sites(spec: Mapping[str, Any], prefix: str) -> Iterator[ImageSite]:
    """Every image in a pod spec, containers first, strictly: a wrong type raises MalformedObject."""
    for list_name in CONTAINER_LISTS:
        containers = spec.get(list_name)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise MalformedObject(f"{prefix}.{list_name}", "is not a list")
        for index, container in enumerate(containers):
            if type(container) is not dict:
                raise MalformedObject(f"{prefix}.{list_name}[{index}]", "is not an object")
            name = container.get("name", "")
            image = container.get("image")
            if type(image) is not str:
                problem = "has no image" if image is None else f"image is a {_json_type(image)}, not a string"
                raise MalformedObject(f"{prefix}.{list_name}[{index}]", problem)
            yield _new_site(ImageSite, (prefix, list_name, index, name if type(name) is str else str(name), image))
    volumes = spec.get(VOLUMES)
    if volumes is None:
        return
    if not isinstance(volumes, list):
        raise MalformedObject(f"{prefix}.{VOLUMES}", "is not a list")
    for index, volume in enumerate(volumes):
        if type(volume) is not dict:
            raise MalformedObject(f"{prefix}.{VOLUMES}[{index}]", "is not an object")
        source = volume.get("image")
        if source is None:  # another type of volume (null is absent, as the API server reads it)
            continue
        if type(source) is not dict:
            raise MalformedObject(f"{prefix}.{VOLUMES}[{index}].image", f"is a {_json_type(source)}, not an object")
        reference = source.get("reference")
        if type(reference) is not str:
            problem = (
                "has no reference" if reference is None
                else f"reference is a {_json_type(reference)}, not a string"
            )
            raise MalformedObject(f"{prefix}.{VOLUMES}[{index}].image", problem)
        name = volume.get("name", "")
        yield _new_site(ImageSite, (prefix, VOLUMES, index, name if type(name) is str else str(name), reference))


def plain_images(spec: Mapping[str, Any]) -> list[str] | None:
    """Every image string of a pod spec whose image sites are all well formed; None when one is not.

    A cheap first look for the common case, a Pod whose images were all judged before: it
    builds no site per container. None sends the caller to ``iter_image_sites``, which names
    what is wrong.
    """
    images: list[str] = []
    for list_name in CONTAINER_LISTS:
        containers = spec.get(list_name)
        if containers is None:
            continue
        if type(containers) is not list:
            return None
        for container in containers:
            if type(container) is not dict or type(image := container.get("image")) is not str:
                return None
            images.append(image)
    volumes = spec.get(VOLUMES)
    if volumes is not None:
        if type(volumes) is not list:
            return None
        for volume in volumes:
            if type(volume) is not dict:
                return None
            source = volume.get("image")
            if source is None:
                continue
            if type(source) is not dict or type(reference := source.get("reference")) is not str:
                return None
            images.append(reference)
    return images


def images_in(obj: Any, path: tuple[str, ...]) -> set[str]:
    """The image strings an (old) object holds at any image site, read leniently: unreadable parts hold none."""
    try:
        spec = find_pod_spec(obj, path)
    except MalformedObject:
        return set()
    if spec is None:
        return set()
    found: set[str] = set()
    for list_name in CONTAINER_LISTS:
        containers = spec.get(list_name)
        if isinstance(containers, list):
            found.update(c["image"] for c in containers if isinstance(c, dict) and isinstance(c.get("image"), str))
    volumes = spec.get(VOLUMES)
    if isinstance(volumes, list):
        sources = [v["image"] for v in volumes if isinstance(v, dict) and isinstance(v.get("image"), dict)]
        found.update(s["reference"] for s in sources if isinstance(s.get("reference"), str))
    return found


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
