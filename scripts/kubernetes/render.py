"""Renders overlays of deploy/kubernetes with kustomize (`kubectl kustomize`) and validates every object offline:
built-in kinds against the Kubernetes API's own JSON schemas (kubernetes-validate, strict: an unknown field is an
error) for each version named, KEDA's kinds against deploy/kubernetes/schemas/keda-v1alpha1.json (with the
RabbitMQ scaler's metadata checked by name). Prints {"<overlay>": [objects...]} as JSON on stdout; exits 1 and
names every problem on stderr.

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
# The RabbitMQ scaler's parameters (KEDA 2.15); Deckhand's triggers use protocol, queueName, mode, value,
# activationValue and vhostName, the host coming from a TriggerAuthentication.
RABBITMQ_PARAMETERS = {
    "protocol", "queueName", "mode", "value", "activationValue", "host", "hostFromEnv", "vhostName", "useRegex",
    "excludeUnacknowledged", "pageSize", "operation", "timeout", "unsafeSsl",
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
                if trigger.get("type") == "rabbitmq":
                    metadata = trigger.get("metadata", {})
                    unknown = set(metadata) - RABBITMQ_PARAMETERS
                    if unknown:
                        found.append(f"{name}: rabbitmq trigger: unknown parameters {sorted(unknown)}")
                    if "queueName" not in metadata or "value" not in metadata:
                        found.append(f"{name}: rabbitmq trigger: queueName and value are required")
                    if metadata.get("mode", "QueueLength") not in ("QueueLength", "MessageRate"):
                        found.append(f"{name}: rabbitmq trigger: mode {metadata.get('mode')!r}")
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
