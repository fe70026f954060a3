"""Reads a Prometheus text exposition (the file named, or stdin) with prometheus_client's own parser and prints
one JSON object: every family with its type and its samples' names. A text the parser refuses is a non-zero
exit with the parser's error."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
families = {}
for family in text_string_to_metric_families(text):
    families[family.name] = {
        'type': family.type,
        'samples': sorted({sample.name for sample in family.samples}),
        'labels': sorted({json.dumps(sample.labels, sort_keys=True) for sample in family.samples}),
    }
print(json.dumps({'families': families}))
