"""Parses events with OpenHands' own classes, as its clients do.

Reads a JSON array of events (or of observations as a sandbox server returns them) from the file named by
its argument (or standard input) and prints one JSON object on the last line of its output: for each event, the OpenHands class it became (or null) and, for those that did not
parse, why. The contract tests compare this with what Deckhand meant to send.
"""

import copy
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from openhands.events.serialization import event_from_dict, event_to_dict  # noqa: E402


def parse(item):
    event = event_from_dict(copy.deepcopy(item))
    # A parsed event must also serialise again, as OpenHands stores and streams it.
    event_to_dict(event)
    return type(event).__name__


def main():
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as source:
            items = json.load(source)
    else:
        items = json.load(sys.stdin)
    classes, failures = [], []
    for index, item in enumerate(items):
        try:
            classes.append(parse(item))
        except Exception as error:  # any failure is a finding, whatever its type
            classes.append(None)
            kind = item.get("observation") or item.get("action") if isinstance(item, dict) else None
            failures.append({"index": index, "kind": kind, "error": f"{type(error).__name__}: {error}"})
    sys.stdout.write("\n" + json.dumps({"classes": classes, "failures": failures}) + "\n")


main()
