"""A corpus of manifests for the ``webhook check`` benchmark: Deployments, Services, ConfigMaps
and CronJobs as a team would keep them in git, several to a file, at realistic sizes (a
Deployment of about 70 lines with two containers, probes, resources and a security context).
Every image comes from a registry the embedded default policy allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def deployment(i: int) -> dict[str, Any]:
    app = f"web-{i}"
    container = {
        "name": "web", "image": f"ghcr.io/acme/{app}:1.{i}.0", "imagePullPolicy": "IfNotPresent",
        "args": ["--port=8080", "--log-level=info"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "MODE", "value": "production"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 5},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": "shop", "labels": {"app": app, "team": "shop", "tier": "frontend"},
                     "annotations": {"owner": "team-shop@example.com", "deployed-at": "2024-05-01T10:00:00Z"}},
        "spec": {
            "replicas": 3, "revisionHistoryLimit": 10, "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": app, "team": "shop"}},
                "spec": {
                    "serviceAccountName": "web",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container, {"name": "pause", "image": "registry.k8s.io/pause:3.9",
                                               "resources": {"requests": {"cpu": "10m"}}}],
                    "volumes": [{"name": "config", "configMap": {"name": app}}],
                },
            },
        },
    }


def service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"web-{i}", "namespace": "shop", "labels": {"app": f"web-{i}"}},
            "spec": {"type": "ClusterIP", "selector": {"app": f"web-{i}"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def config_map(i: int) -> dict[str, Any]:
    properties = "".join(f"key{j}=value-{j}-{i}\n" for j in range(20))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"web-{i}", "namespace": "shop"},
            "data": {"app.properties": properties, "LOG_LEVEL": "info", "FEATURE_X": "true"}}


def cron_job(i: int) -> dict[str, Any]:
    job = {"name": "job", "image": f"quay.io/acme/batch:{i}", "command": ["/bin/run", "--all"],
           "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"nightly-{i}", "namespace": "ops"},
            "spec": {"schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                     "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"spec": {
                         "restartPolicy": "OnFailure", "containers": [job]}}}}}}


KINDS = (deployment, service, config_map, cron_job)


def write(directory: Path, objects: int, files: int) -> list[Path]:
    """``objects`` objects, the four kinds in turn, spread evenly over ``files`` YAML files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        numbers = range(f * objects // files, (f + 1) * objects // files)
        path = directory / f"app-{f:04}.yaml"
        path.write_text(yaml.safe_dump_all([KINDS[n % len(KINDS)](n) for n in numbers], sort_keys=False))
        paths.append(path)
    return paths
