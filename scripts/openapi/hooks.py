"""Schemathesis hooks for OpenAPIFuzzTests: generators for the string formats Deckhand's /openapi.json names."""

import json

import schemathesis
from hypothesis import strategies as st

# `replay_json` given as a string holds a trajectory, as OpenHands sends it: the JSON of an array of events
# (objects) or of {"trajectory": [...]}. Schemathesis does not generate from `contentSchema`, so the format
# says it.
_event = st.fixed_dictionaries(
    {"source": st.sampled_from(["agent", "user"]), "action": st.sampled_from(["message", "think", "finish"])},
    optional={"args": st.dictionaries(st.sampled_from(["content", "thought"]), st.text(max_size=20), max_size=2)},
)
_trajectory = st.lists(_event, max_size=3)
schemathesis.openapi.format(
    "trajectory-json",
    st.one_of(_trajectory, st.fixed_dictionaries({"trajectory": _trajectory})).map(json.dumps),
)
