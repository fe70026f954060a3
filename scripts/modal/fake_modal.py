"""A fake of Modal's API server for Deckhand's tests: gRPC over h2c on loopback (grpclib), with Modal's own service
and message definitions (modal_proto of the `modal` package pinned in requirements.txt), so every request is
decoded by Modal's classes and one carrying a field Modal does not define is refused (INVALID_ARGUMENT).

Its sandboxes are `deckhand-sandbox` processes on this machine: SandboxCreate starts the binary given with
--sandbox-binary in its own folder with the sandbox's secrets as its environment, and a tunnel to the sandbox's
first open port is the process's loopback port. Run:

    python fake_modal.py --sandbox-binary PATH --root DIR --token-id ID --token-secret SECRET
        [--calls FILE] [--faults JSON]

It prints `fake-modal port N` once listening, appends one JSON line per call to --calls (the RPC, the metadata
Deckhand must send, the request as Modal's classes read it; neither the token nor a secret's values are
written) and stops its
sandboxes when it ends (SIGTERM or its stdin closing).

--faults (JSON) makes it misbehave the ways the tests ask:
  {"unavailable": {"SandboxCreate": 2}}     the first 2 calls of an RPC answer UNAVAILABLE
  {"status": {"AppGetOrCreate": [16, "m"]}} every call of an RPC answers that status (trailers-only)
  {"slow": {"SandboxCreate": 3.0}}          an RPC waits that many seconds before answering
  {"tunnel_never": true}                    tunnels never appear (SandboxGetTunnels: TIMEOUT)
  {"exit_on_start": 3}                      a sandbox's entrypoint exits at once with that code
  {"cut_image_stream": true}                ImageJoinStreaming sends half a message and resets the stream
  {"image_building": 1}                     ImageGetOrCreate answers without a result that many times (join)
  {"task_delay": 0.5}                       seconds before a created sandbox has a task
  {"warning": "text"}                       every answer carries x-modal-warning
"""

import argparse
import asyncio
import json
import os
import random
import signal
import string
import sys
import time
import urllib.parse

import grpclib.const
import grpclib.server
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_grpc
from modal_proto import api_pb2 as api

BUILDER_VERSION = '2025.06'


def unknown_fields(message: Message, path: str = '') -> list[str]:
    """The fields of `message` (and the messages inside it) that Modal's definitions do not know."""
    found = []
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet

        for field in UnknownFieldSet(message):
            found.append(f'{path}{message.DESCRIPTOR.name}.<{field.field_number}>')
    except ImportError:
        if message.UnknownFields():
            found.append(f'{path}{message.DESCRIPTOR.name}.<unknown>')
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        items = value if descriptor.label == descriptor.LABEL_REPEATED else [value]
        for item in items:
            found += unknown_fields(item, f'{path}{descriptor.name}.')
    return found


def modal_id(prefix: str) -> str:
    return prefix + '-' + ''.join(random.choices(string.ascii_letters + string.digits, k=22))


class Sandbox:
    def __init__(self, sandbox_id: str, app_id: str, definition, tags: dict[str, str], environment: dict[str, str]):
        self.id = sandbox_id
        self.app_id = app_id
        self.definition = definition
        self.tags = tags
        self.environment = environment
        self.created_at = time.time()
        self.task_id: str | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.result: api.GenericResult | None = None
        self.changed = asyncio.Event()

    def touch(self):
        self.changed.set()
        self.changed = asyncio.Event()


class FakeModal:
    def __init__(self, options):
        self.options = options
        self.faults = json.loads(options.faults or '{}')
        self.calls_left = dict(self.faults.get('unavailable', {}))
        self.building_left = int(self.faults.get('image_building', 0))
        self.apps: dict[tuple[str, str], str] = {}
        self.images: dict[str, str] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.names: dict[tuple[str, str], str] = {}

    # MARK: every call

    async def begin(self, stream, rpc: str):
        """Reads the request, checks what every call must carry, records it and plays the faults."""
        request = await stream.recv_message()
        metadata = stream.metadata
        record = {
            'rpc': rpc,
            'idempotency_key': metadata.get('x-idempotency-key'),
            'attempt': metadata.get('x-retry-attempt'),
            'retry_delay': metadata.get('x-retry-delay'),
            'client_type': metadata.get('x-modal-client-type'),
            'client_version': metadata.get('x-modal-client-version'),
            'token_id_ok': metadata.get('x-modal-token-id') == self.options.token_id,
            'request': MessageToDict(request, preserving_proto_field_name=True),
        }
        if 'env_dict' in record['request']:  # a secret's values are not written down, only its names
            record['request']['env_dict'] = {name: '<redacted>' for name in record['request']['env_dict']}
        if self.options.calls:
            with open(self.options.calls, 'a') as calls:
                calls.write(json.dumps(record) + '\n')
        if (
            metadata.get('x-modal-token-id') != self.options.token_id
            or metadata.get('x-modal-token-secret') != self.options.token_secret
        ):
            raise GRPCError(Status.UNAUTHENTICATED, 'Token ID or secret is invalid')
        if not metadata.get('x-idempotency-key') or not metadata.get('x-modal-client-type'):
            raise GRPCError(Status.INVALID_ARGUMENT, 'x-idempotency-key and x-modal-client-type are required')
        unknown = unknown_fields(request)
        if unknown:
            raise GRPCError(Status.INVALID_ARGUMENT, f'fields Modal does not define: {", ".join(unknown)}')
        if rpc in self.faults.get('status', {}):
            code, message = self.faults['status'][rpc]
            raise GRPCError(Status(code), message)
        if self.calls_left.get(rpc, 0) > 0:
            self.calls_left[rpc] -= 1
            raise GRPCError(Status.UNAVAILABLE, 'the fake is unavailable this time')
        if rpc in self.faults.get('slow', {}):
            await asyncio.sleep(float(self.faults['slow'][rpc]))
        return request

    async def answer(self, stream, reply):
        await stream.send_message(reply)
        if 'warning' in self.faults:
            await stream.send_trailing_metadata(metadata={'x-modal-warning': urllib.parse.quote(self.faults['warning'])})

    # MARK: apps, environments, images, secrets

    async def AppGetOrCreate(self, stream):
        request = await self.begin(stream, 'AppGetOrCreate')
        key = (request.environment_name, request.app_name)
        if key not in self.apps:
            if request.object_creation_type != api.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found")
            self.apps[key] = modal_id('ap')
        await self.answer(stream, api.AppGetOrCreateResponse(app_id=self.apps[key]))

    async def EnvironmentGetOrCreate(self, stream):
        request = await self.begin(stream, 'EnvironmentGetOrCreate')
        settings = api.EnvironmentSettings(image_builder_version=BUILDER_VERSION, webhook_suffix='fake')
        metadata = api.EnvironmentMetadata(name=request.deployment_name or 'main', settings=settings)
        await self.answer(stream, api.EnvironmentGetOrCreateResponse(environment_id='en-fake', metadata=metadata))

    async def ImageGetOrCreate(self, stream):
        request = await self.begin(stream, 'ImageGetOrCreate')
        commands = list(request.image.dockerfile_commands)
        if len(commands) != 1 or not commands[0].startswith('FROM '):
            raise GRPCError(Status.INVALID_ARGUMENT, f'expected one FROM line, got {commands}')
        if request.builder_version != BUILDER_VERSION:
            raise GRPCError(Status.INVALID_ARGUMENT, f'unknown image builder version {request.builder_version!r}')
        recipe = commands[0]
        image_id = self.images.setdefault(recipe, modal_id('im'))
        if self.building_left > 0:
            self.building_left -= 1
            await self.answer(stream, api.ImageGetOrCreateResponse(image_id=image_id))
            return
        await self.answer(stream, api.ImageGetOrCreateResponse(image_id=image_id, result=self.build_result(recipe)))

    def build_result(self, recipe: str) -> api.GenericResult:
        if 'missing' in recipe:
            return api.GenericResult(
                status=api.GenericResult.GENERIC_STATUS_FAILURE, exception=f'pull access denied: {recipe[5:]}'
            )
        return api.GenericResult(status=api.GenericResult.GENERIC_STATUS_SUCCESS)

    async def ImageJoinStreaming(self, stream):
        request = await self.begin(stream, 'ImageJoinStreaming')
        recipe = next((r for r, i in self.images.items() if i == request.image_id), None)
        if recipe is None:
            raise GRPCError(Status.NOT_FOUND, f'Image {request.image_id} not found')
        log = api.ImageJoinStreamingResponse(
            task_logs=[api.TaskLogs(data=f'Step 1/1 : {recipe}\n', file_descriptor=1)], entry_id='1'
        )
        if self.faults.get('cut_image_stream'):
            self.faults['cut_image_stream'] = False
            await stream.send_initial_metadata()
            data = log.SerializeToString()
            framed = b'\x00' + len(data).to_bytes(4, 'big') + data
            await stream._stream.send_data(framed[: len(framed) // 2])
            await stream._stream.reset()
            return
        await stream.send_message(log)
        await self.answer(stream, api.ImageJoinStreamingResponse(result=self.build_result(recipe), entry_id='2', eof=True))

    async def SecretGetOrCreate(self, stream):
        request = await self.begin(stream, 'SecretGetOrCreate')
        if request.object_creation_type != api.OBJECT_CREATION_TYPE_EPHEMERAL:
            raise GRPCError(Status.INVALID_ARGUMENT, 'the fake makes only ephemeral secrets')
        secret_id = modal_id('st')
        self.secrets[secret_id] = dict(request.env_dict)
        await self.answer(stream, api.SecretGetOrCreateResponse(secret_id=secret_id))

    # MARK: sandboxes

    async def SandboxCreate(self, stream):
        request = await self.begin(stream, 'SandboxCreate')
        if request.app_id not in self.apps.values():
            raise GRPCError(Status.NOT_FOUND, f'App {request.app_id} not found')
        definition = request.definition
        if definition.image_id not in self.images.values():
            raise GRPCError(Status.NOT_FOUND, f'Image {definition.image_id} not found')
        environment = {}
        for secret_id in definition.secret_ids:
            if secret_id not in self.secrets:
                raise GRPCError(Status.NOT_FOUND, f'Secret {secret_id} not found')
            environment.update(self.secrets[secret_id])
        if definition.HasField('name'):
            if (request.app_id, definition.name) in self.names:
                raise GRPCError(Status.ALREADY_EXISTS, f"Sandbox with name '{definition.name}' already exists")
        if not definition.entrypoint_args or not definition.entrypoint_args[0].endswith('deckhand-sandbox'):
            raise GRPCError(Status.INVALID_ARGUMENT, f'the fake runs only deckhand-sandbox: {definition.entrypoint_args}')
        sandbox = Sandbox(
            modal_id('sb'), request.app_id, definition, {t.tag_name: t.tag_value for t in request.tags}, environment
        )
        self.sandboxes[sandbox.id] = sandbox
        if definition.HasField('name'):
            self.names[(request.app_id, definition.name)] = sandbox.id
        asyncio.get_running_loop().create_task(self.run(sandbox))
        await self.answer(stream, api.SandboxCreateResponse(sandbox_id=sandbox.id))

    async def run(self, sandbox: Sandbox):
        """Schedules the sandbox: a task, then its entrypoint as a local deckhand-sandbox process."""
        await asyncio.sleep(float(self.faults.get('task_delay', 0.05)))
        if sandbox.result is not None:
            return
        sandbox.task_id = modal_id('ta')
        sandbox.touch()
        if 'exit_on_start' in self.faults:
            sandbox.result = api.GenericResult(
                status=api.GenericResult.GENERIC_STATUS_FAILURE,
                exception='the entrypoint exited',
                exitcode=int(self.faults['exit_on_start']),
            )
            sandbox.touch()
            return
        folder = os.path.join(self.options.root, sandbox.id)
        os.makedirs(os.path.join(folder, 'workspace'), exist_ok=True)
        port_file = os.path.join(folder, 'port')
        arguments = [self.options.sandbox_binary, '--host', '127.0.0.1', '--port', '0', '--port-file', port_file]
        arguments += ['--working-dir', os.path.join(folder, 'workspace')]
        environment = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': folder, **sandbox.environment}
        sandbox.process = await asyncio.create_subprocess_exec(
            *arguments,
            env=environment,
            cwd=folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=open(os.path.join(folder, 'out.log'), 'ab'),
            stderr=asyncio.subprocess.STDOUT,
        )
        while sandbox.port is None and sandbox.process.returncode is None:
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    sandbox.port = int(text)
                    break
            await asyncio.sleep(0.02)
        sandbox.touch()
        code = await sandbox.process.wait()
        if sandbox.result is None:
            status = api.GenericResult.GENERIC_STATUS_SUCCESS if code == 0 else api.GenericResult.GENERIC_STATUS_FAILURE
            sandbox.result = api.GenericResult(status=status, exitcode=code)
            sandbox.touch()

    def sandbox(self, sandbox_id: str) -> Sandbox:
        if sandbox_id not in self.sandboxes:
            raise GRPCError(Status.NOT_FOUND, f'Sandbox {sandbox_id} not found')
        return self.sandboxes[sandbox_id]

    async def until(self, sandbox: Sandbox, condition, timeout: float):
        """Long-polls: waits until `condition()` or `timeout` seconds pass."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not condition() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(sandbox.changed.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break

    async def SandboxGetTaskId(self, stream):
        request = await self.begin(stream, 'SandboxGetTaskId')
        sandbox = self.sandbox(request.sandbox_id)
        timeout = request.timeout if request.HasField('timeout') else 0
        await self.until(sandbox, lambda: sandbox.task_id is not None or sandbox.result is not None, timeout)
        reply = api.SandboxGetTaskIdResponse()
        if sandbox.task_id is not None:
            reply.task_id = sandbox.task_id
        if sandbox.result is not None:
            reply.task_result.CopyFrom(sandbox.result)
        await self.answer(stream, reply)

    async def SandboxGetTunnels(self, stream):
        request = await self.begin(stream, 'SandboxGetTunnels')
        sandbox = self.sandbox(request.sandbox_id)
        ports = [p.port for p in sandbox.definition.open_ports.ports]

        def ready():
            return sandbox.result is not None or (sandbox.port is not None and not self.faults.get('tunnel_never'))

        await self.until(sandbox, ready, request.timeout)
        if sandbox.result is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, f'Sandbox {sandbox.id} has already finished')
        if not ready() or not ports:
            await self.answer(
                stream, api.SandboxGetTunnelsResponse(result=api.GenericResult(status=api.GenericResult.GENERIC_STATUS_TIMEOUT))
            )
            return
        tunnel = api.TunnelData(host='127.0.0.1', port=sandbox.port, container_port=ports[0])
        reply = api.SandboxGetTunnelsResponse(
            result=api.GenericResult(status=api.GenericResult.GENERIC_STATUS_SUCCESS), tunnels=[tunnel]
        )
        await self.answer(stream, reply)

    async def SandboxWait(self, stream):
        request = await self.begin(stream, 'SandboxWait')
        sandbox = self.sandbox(request.sandbox_id)
        await self.until(sandbox, lambda: sandbox.result is not None, request.timeout)
        reply = api.SandboxWaitResponse()
        if sandbox.result is not None:
            reply.result.CopyFrom(sandbox.result)
        await self.answer(stream, reply)

    async def SandboxTerminate(self, stream):
        request = await self.begin(stream, 'SandboxTerminate')
        sandbox = self.sandbox(request.sandbox_id)
        reply = api.SandboxTerminateResponse()
        if sandbox.result is not None:
            reply.existing_result.CopyFrom(sandbox.result)
        else:
            sandbox.result = api.GenericResult(status=api.GenericResult.GENERIC_STATUS_TERMINATED, exitcode=-1)
            if sandbox.process is not None and sandbox.process.returncode is None:
                sandbox.process.kill()
            sandbox.touch()
        await self.answer(stream, reply)

    async def SandboxList(self, stream):
        request = await self.begin(stream, 'SandboxList')
        wanted = {t.tag_name: t.tag_value for t in request.tags}
        found = [
            s
            for s in self.sandboxes.values()
            if s.app_id == request.app_id
            and all(s.tags.get(k) == v for k, v in wanted.items())
            and (request.include_finished or s.result is None)
            and (not request.before_timestamp or s.created_at < request.before_timestamp)
        ]
        found.sort(key=lambda s: s.created_at, reverse=True)
        reply = api.SandboxListResponse()
        for sandbox in found[: self.options.page_size]:
            info = reply.sandboxes.add(id=sandbox.id, created_at=sandbox.created_at, app_id=sandbox.app_id)
            for name, value in sandbox.tags.items():
                info.tags.add(tag_name=name, tag_value=value)
            if sandbox.task_id is not None:
                info.task_info.id = sandbox.task_id
                if sandbox.result is not None:
                    info.task_info.result.CopyFrom(sandbox.result)
        await self.answer(stream, reply)

    def stop_sandboxes(self):
        for sandbox in self.sandboxes.values():
            if sandbox.process is not None and sandbox.process.returncode is None:
                sandbox.process.kill()


def handler(fake: FakeModal):
    """Modal's service (api_grpc.ModalClientBase): the RPCs above; every other one answers UNIMPLEMENTED."""

    async def unimplemented(self, stream):
        raise GRPCError(Status.UNIMPLEMENTED, 'the fake does not serve this RPC')

    members = {}
    for name in api_grpc.ModalClientBase.__abstractmethods__:
        implemented = getattr(FakeModal, name, None)
        members[name] = (lambda method: lambda self, stream: method(fake, stream))(implemented) if implemented else unimplemented
    service = type('FakeModalService', (api_grpc.ModalClientBase,), members)
    return service()


async def main(options):
    fake = FakeModal(options)
    server = grpclib.server.Server([handler(fake)])
    await server.start('127.0.0.1', options.port)
    port = server._server.sockets[0].getsockname()[1]
    print(f'fake-modal port {port}', flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # The test that started it may die without a word: its stdin closing ends the fake too.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1024) else None)
    await stop.wait()
    fake.stop_sandboxes()
    server.close()
    await server.wait_closed()


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--sandbox-binary', required=True)
    parser.add_argument('--root', required=True)
    parser.add_argument('--token-id', required=True)
    parser.add_argument('--token-secret', required=True)
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--calls')
    parser.add_argument('--faults')
    parser.add_argument('--page-size', type=int, default=10)
    options = parser.parse_args()
    asyncio.run(main(options))
