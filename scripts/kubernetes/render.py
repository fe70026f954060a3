"""Renders overlays of deploy/kubernetes with kustomize (`kubectl kustomize`) and validates every object offline:
built-in kinds against the Kubernetes API's own JSON schemas (kubernetes-validate, strict: an unknown field is an
error) for each version named, KEDA's kinds against deploy/kubernetes/schemas/keda-v1alpha1.json (with each
trigger's parameters checked by name against SCALERS). Prints {"<overlay>": [objects...]} as JSON on stdout;
exits 1 and names every problem on stderr.

    render.py [--kubernetes-version 1.30.0 ...] OVERLAY...
    render.py --stdin NAME < rendered.yaml      (validates YAML given on standard input, as NAME)
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
KEDA_SCHEMA = REPOSITORY / "deploy/kubernetes/schemas/keda-v1alpha1.json"
# The scalers Deckhand's triggers use (KEDA 2.15), with every parameter each one takes, those it requires, the
# values a parameter may have when it is one of a few, and the fields it needs on the trigger itself with their
# values. A trigger of another type is a finding: add it here first.
SCALERS = {
    # The host comes from a TriggerAuthentication (the Secret's amqp-url).
    "rabbitmq": {
        "parameters": {
            "protocol", "queueName", "mode", "value", "activationValue", "host", "hostFromEnv", "vhostName",
            "useRegex", "excludeUnacknowledged", "pageSize", "operation", "timeout", "unsafeSsl",
        },
        "required": {"queueName", "value"},
        "choices": {"mode": {"QueueLength", "MessageRate"}, "protocol": {"amqp", "http", "auto"}},
        "trigger": {},
    },
    # Its metricType sits on the trigger itself since KEDA 2.10, not in its metadata.
    "cpu": {
        "parameters": {"value", "containerName"},
        "required": {"value"},
        "choices": {},
        "trigger": {"metricType": {"Utilization", "AverageValue"}},
    },
}


def render(overlay):
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        sys.exit("render.py: kubectl (1.27 or later, for its built-in kustomize v5) is not on PATH; set KUBECTL to one")
    # The base's ConfigMap is made from config/deckhand.conf, outside the kustomization's folder.
    result = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        sys.exit(f"render.py: kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return result.stdout


def trigger_problems(name, trigger):
    """What is wrong with one KEDA trigger, by its scaler's entry in SCALERS."""
    kind = trigger.get("type")
    scaler = SCALERS.get(kind)
    if scaler is None:
        return [f"{name}: trigger type {kind!r} is not one render.py knows (SCALERS)"]
    found = []
    metadata = trigger.get("metadata", {})
    unknown = set(metadata) - scaler["parameters"]
    if unknown:
        found.append(f"{name}: {kind} trigger: unknown parameters {sorted(unknown)}")
    missing = scaler["required"] - set(metadata)
    if missing:
        found.append(f"{name}: {kind} trigger: missing parameters {sorted(missing)}")
    for parameter, allowed in scaler["choices"].items():
        if parameter in metadata and metadata[parameter] not in allowed:
            found.append(f"{name}: {kind} trigger: {parameter} {metadata[parameter]!r} is not one of {sorted(allowed)}")
    if "value" in metadata:
        try:
            if float(metadata["value"]) <= 0:
                found.append(f"{name}: {kind} trigger: value {metadata['value']!r} must be above 0")
        except (TypeError, ValueError):
            found.append(f"{name}: {kind} trigger: value {metadata['value']!r} is not a number")
    for field, allowed in scaler["trigger"].items():
        if trigger.get(field) not in allowed:
            found.append(f"{name}: {kind} trigger: {field} {trigger.get(field)!r} is not one of {sorted(allowed)}")
    return found


def problems(objects, versions):
    found = []
    keda = json.loads(KEDA_SCHEMA.read_text())
    for item in objects:
        name = f"{item.get('kind', '?')}/{item.get('metadata', {}).get('name', '?')}"
        if item.get("apiVersion", "").startswith("keda.sh/"):
            kind = item.get("kind", "")
            if kind not in keda["$defs"]:
                found.append(f"{name}: KEDA kind {kind!r} is not one render.py knows")
                continue
            schema = {"$defs": keda["$defs"], "$ref": f"#/$defs/{kind}"}
            for error in jsonschema.Draft202012Validator(schema).iter_errors(item):
                path = ".".join(str(part) for part in error.absolute_path)
                found.append(f"{name}: {path}: {error.message}")
            for trigger in item.get("spec", {}).get("triggers", []):
                found += trigger_problems(name, trigger)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                found.append(f"{name} (Kubernetes {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                found.append(f"{name}: Kubernetes {version} has no {item.get('apiVersion')} {item.get('kind')}")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes-version", action="append", dest="versions")
    parser.add_argument("--stdin", action="store_true")
    parser.add_argument("overlays", nargs="+")
    arguments = parser.parse_args()
    versions = arguments.versions or ["1.30.0", "1.37.0"]
    rendered, failed = {}, []
    for overlay in arguments.overlays:
        text = sys.stdin.read() if arguments.stdin else render(overlay)
        objects = [item for item in yaml.safe_load_all(text) if item]
        failed += [f"{overlay}: {problem}" for problem in problems(objects, versions)]
        rendered[overlay] = objects
    if failed:
        print("\n".join(failed), file=sys.stderr)
        sys.exit(1)
    json.dump(rendered, sys.stdout)


if __name__ == "__main__":
    main()
