#!/usr/bin/env bash
# Every dependency a target declares is imported by one of its files (SwiftPM's
# --explicit-target-dependency-import-check checks only the other direction: what is imported is declared).
# A declared dependency nobody imports is one more thing to build and one more edge that lies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
swift package dump-package | python3 -c '
import glob, json, re, sys
package = json.load(sys.stdin)
pattern = re.compile(r"^\s*(?:@testable\s+|@_exported\s+|public\s+|package\s+|internal\s+)?import\s+(?:struct\s+|class\s+|enum\s+|func\s+|protocol\s+)?(\w+)", re.M)
unused = []
for target in package["targets"]:
    if target["type"] == "system":
        continue
    folder = target.get("path") or ("Tests/" if target["type"] == "test" else "Sources/") + target["name"]
    imported = set()
    for path in glob.glob(folder + "/**/*.swift", recursive=True):
        imported.update(pattern.findall(open(path).read()))
    for dependency in target["dependencies"]:
        kind, value = next(iter(dependency.items()))
        name = value[0]
        if name not in imported:
            unused.append("%s declares %s but no file of it imports it" % (target["name"], name))
if unused:
    print("\n".join(unused), file=sys.stderr)
    sys.exit(1)
'
