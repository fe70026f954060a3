"""Golden bytes of the Modal messages Deckhand sends and reads, made with Modal's own classes (modal_proto of the
`modal` package pinned in requirements.txt), for Tests/UnitTests/ModalMessageTests.swift:

    $(scripts/modal/venv.sh | tail -n 1) scripts/modal/golden.py > Tests/UnitTests/Fixtures/modal-golden.json

"requests" are what the Swift codec must write byte for byte (deterministic serialization: map entries in key
order); "responses" are what it must read, with fields it does not know among them. The Swift test builds the
same values; change both together.
"""

import json

from modal_proto import api_pb2 as api


def hexed(message) -> str:
    return message.SerializeToString(deterministic=True).hex()


TAGS = [
    api.SandboxTag(tag_name='deckhand.deployment', tag_value='prod'),
    api.SandboxTag(tag_name='deckhand.sandbox', tag_value='6f1c2a52-8f0e-4d8e-9c55-0a1b2c3d4e5f'),
]

requests = {
    'app_get_or_create': api.AppGetOrCreateRequest(
        app_name='deckhand', environment_name='main', object_creation_type=api.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
    ),
    'environment_get_or_create': api.EnvironmentGetOrCreateRequest(deployment_name='main'),
    'image_get_or_create': api.ImageGetOrCreateRequest(
        image=api.Image(dockerfile_commands=['FROM registry.example.com/deckhand/sandbox:0.1.0']),
        app_id='ap-1',
        builder_version='2025.06',
    ),
    'image_join_streaming': api.ImageJoinStreamingRequest(image_id='im-1', timeout=55, last_entry_id='e-7'),
    'secret_get_or_create': api.SecretGetOrCreateRequest(
        environment_name='main',
        object_creation_type=api.OBJECT_CREATION_TYPE_EPHEMERAL,
        env_dict={'SESSION_API_KEY': 'k-1', 'A': '1', 'EMPTY': ''},
    ),
    'sandbox_create': api.SandboxCreateRequest(
        app_id='ap-1',
        definition=api.Sandbox(
            entrypoint_args=['/usr/local/bin/deckhand-sandbox', '--port', '8000'],
            image_id='im-1',
            secret_ids=['st-1'],
            resources=api.Resources(memory_mb=2048, milli_cpu=1000, memory_mb_max=2048, milli_cpu_max=2000),
            timeout_secs=86400,
            workdir='/workspace',
            open_ports=api.PortSpecs(ports=[api.PortSpec(port=8000)]),
            idle_timeout_secs=0,
        ),
        tags=TAGS,
    ),
    'sandbox_get_task_id': api.SandboxGetTaskIdRequest(sandbox_id='sb-1', timeout=55),
    'sandbox_get_tunnels': api.SandboxGetTunnelsRequest(sandbox_id='sb-1', timeout=50),
    'sandbox_wait_polling': api.SandboxWaitRequest(sandbox_id='sb-1', timeout=0),
    'sandbox_wait': api.SandboxWaitRequest(sandbox_id='sb-1', timeout=10),
    'sandbox_terminate': api.SandboxTerminateRequest(sandbox_id='sb-1'),
    'sandbox_list': api.SandboxListRequest(
        app_id='ap-1', before_timestamp=1.7e9, environment_name='main', include_finished=False, tags=TAGS
    ),
}

responses = {
    'app_get_or_create': api.AppGetOrCreateResponse(
        app_id='ap-1', handle_metadata=api.AppHandleMetadata(description='deckhand', environment_name='main')
    ),
    'environment_get_or_create': api.EnvironmentGetOrCreateResponse(
        environment_id='en-1',
        metadata=api.EnvironmentMetadata(
            name='main', settings=api.EnvironmentSettings(image_builder_version='2025.06', webhook_suffix='w')
        ),
    ),
    'image_get_or_create_building': api.ImageGetOrCreateResponse(image_id='im-1'),
    'image_join_streaming': api.ImageJoinStreamingResponse(
        result=api.GenericResult(status=api.GenericResult.GENERIC_STATUS_SUCCESS),
        task_logs=[api.TaskLogs(data='step 1/1 : FROM ...', file_descriptor=1)],
        entry_id='e-9',
        eof=True,
    ),
    'generic_result_terminated': api.GenericResult(
        status=api.GenericResult.GENERIC_STATUS_TERMINATED, exception='terminated', exitcode=-1
    ),
    'sandbox_get_task_id': api.SandboxGetTaskIdResponse(task_id='ta-1'),
    'sandbox_get_tunnels': api.SandboxGetTunnelsResponse(
        result=api.GenericResult(status=api.GenericResult.GENERIC_STATUS_SUCCESS),
        tunnels=[
            api.TunnelData(
                host='sb-1-8000.modal.host',
                port=443,
                unencrypted_host='r.modal.host',
                unencrypted_port=40001,
                container_port=8000,
            )
        ],
    ),
    'sandbox_list': api.SandboxListResponse(
        sandboxes=[
            api.SandboxInfo(
                id='sb-1',
                created_at=1.7e9,
                task_info=api.TaskInfo(
                    id='ta-1', result=api.GenericResult(status=api.GenericResult.GENERIC_STATUS_FAILURE, exitcode=3)
                ),
                app_id='ap-1',
                tags=TAGS,
                name='n',
                timeout_secs=300,
            ),
            api.SandboxInfo(id='sb-2', created_at=1.6e9, tags=TAGS[:1]),
        ]
    ),
}

print(
    json.dumps(
        {
            'generated_by': 'scripts/modal/golden.py with modal_proto of modal 1.6.4',
            'requests': {name: hexed(message) for name, message in requests.items()},
            'responses': {name: hexed(message) for name, message in responses.items()},
        },
        indent=2,
    )
)
