"""OpenHands' own RemoteRuntime (openhands-ai 0.62.0) as a client of `deckhand runtime-api`.

Run with the interpreter of the image scripts/openhands/runtime-image.sh builds (it holds OpenHands with every
dependency):

    python remote_runtime_client.py <runtime-api url> <session id>     (the API key in SANDBOX_API_KEY)

It does what OpenHands' server does with a remote runtime: connect (GET /sessions/{id}, 404 → POST /start →
GET /runtime/{id} until pod_status is ready → the sandbox's /alive → its first commands: environment variables
and git's configuration), run actions through the action-execution protocol, close while keeping the runtime
(POST /pause), connect again (GET /sessions/{id} says paused → POST /resume → ready), and close for good
(POST /stop). It prints one JSON object of what it saw on its last line; the test judges it. A failure in
OpenHands' client is a non-zero exit with its traceback.
"""

import asyncio
import json
import os
import sys
import time

import httpx
from openhands.core.config import OpenHandsConfig
from openhands.events.action import CmdRunAction, FileReadAction, FileWriteAction
from openhands.events.stream import EventStream
from openhands.llm.llm_registry import LLMRegistry
from openhands.runtime.impl.remote.remote_runtime import RemoteRuntime
from openhands.storage.memory import InMemoryFileStore

# One of OpenHands' published runtime images: `runtime_api.image_map` gives it to Deckhand's sandbox server.
IMAGE = 'ghcr.io/openhands/runtime:0.62-nikolaik'


def make_config(url: str, key: str) -> OpenHandsConfig:
    config = OpenHandsConfig()
    config.sandbox.remote_runtime_api_url = url
    config.sandbox.api_key = key
    config.sandbox.runtime_container_image = IMAGE
    config.sandbox.remote_runtime_init_timeout = 120
    config.sandbox.remote_runtime_api_timeout = 60
    config.sandbox.keep_runtime_alive = True
    config.sandbox.pause_closed_runtimes = True
    return config


def observed(observation) -> dict:
    extras = {}
    for name in ('exit_code', 'path'):
        if hasattr(observation, name):
            extras[name] = getattr(observation, name)
    return {'type': type(observation).__name__, 'content': observation.content, **extras}


def wait_for_status(config: OpenHandsConfig, session: str, wanted: str) -> str:
    """The session's status once it is `wanted` (or the last seen after 60 s): a pause does not wait."""
    status = ''
    for _ in range(300):
        answer = httpx.get(
            f'{config.sandbox.remote_runtime_api_url}/sessions/{session}',
            headers={'X-API-Key': config.sandbox.api_key},
            timeout=30,
        )
        status = answer.json().get('status', f'HTTP {answer.status_code}')
        if status == wanted:
            break
        time.sleep(0.2)
    return status


async def connect(config: OpenHandsConfig, session: str) -> RemoteRuntime:
    stream = EventStream(session, InMemoryFileStore())
    runtime = RemoteRuntime(config, stream, LLMRegistry(config), sid=session, plugins=[], headless_mode=True)
    await runtime.connect()
    return runtime


async def main(url: str, session: str) -> dict:
    config = make_config(url, os.environ['SANDBOX_API_KEY'])
    report: dict = {}

    first = await connect(config, session)
    report['first'] = {'runtime_id': first.runtime_id, 'url': first.runtime_url}
    report['run'] = observed(first.run_action(CmdRunAction('echo kept > /workspace/a.txt && cat /workspace/a.txt')))
    report['failing'] = observed(first.run_action(CmdRunAction('ls /nonexistent')))
    report['write'] = observed(first.run_action(FileWriteAction(path='/workspace/b.txt', content='written\n')))
    report['read'] = observed(first.run_action(FileReadAction(path='/workspace/b.txt')))
    report['env'] = observed(first.run_action(CmdRunAction('echo "git=$(git config --global user.name)"')))
    first.close()  # keep_runtime_alive with pause_closed_runtimes: POST /pause
    report['after_pause'] = wait_for_status(config, session, 'paused')

    second = await connect(config, session)  # paused → POST /resume → ready
    report['second'] = {'runtime_id': second.runtime_id, 'url': second.runtime_url}
    report['after_resume'] = observed(second.run_action(CmdRunAction('cat /workspace/a.txt')))
    second.config.sandbox.keep_runtime_alive = False
    second.close()  # POST /stop
    report['after_stop'] = wait_for_status(config, session, 'stopped')
    return report


if __name__ == '__main__':
    result = asyncio.run(main(sys.argv[1], sys.argv[2]))
    print(json.dumps(result))
