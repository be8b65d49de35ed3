"""`pulumi up` and `pulumi destroy` without the Pulumi engine: everything but its Go code.

The Pulumi CLI and engine cannot be installed on the development machines, so this module
plays the engine's part for a stack's *dynamic* resources (the LXD nodes and Provisioning)
and leaves every other resource (AWS, Kubernetes) to Pulumi's mocks:

- the program runs in-process under ``pulumi.runtime.set_mocks`` (tests.pulumi_mocks), as
  the language host would run it;
- each dynamic resource registration is sent, as the protobuf ``Struct`` the SDK serialised,
  to the SDK's own dynamic provider server: ``python -u -m pulumi.dynamic`` started in its
  own process exactly as Pulumi's ``pulumi-resource-pulumi-python`` plugin script starts it
  (the virtualenv's python, the project directory as working directory), its port read
  from its first line of stdout, called over gRPC: CheckConfig, Configure, then Check,
  Diff, Create, Update and Delete with the engine's conventions (Check gets the last
  inputs, Diff and Update the last outputs, Delete the outputs; secrets stripped because
  the dynamic provider does not accept them; a replacement deletes first when the provider
  says so);
- the provider server's stderr lines are what the engine would show in the update's output
  (it logs a dynamic provider's stderr as info messages); they are collected and echoed;
- the stack's state (each dynamic resource's id, inputs and outputs, in creation order) is
  a JSON file, so a second `up` diffs against the first, and resources the program no
  longer registers are deleted (newest first) after it finished, as the engine does.

What this does *not* cover: the engine's own orchestration (its step generator, parallelism
limits, plugin downloads, the backend's checkpoint format, `pulumi preview` with unknowns).

    engine = Engine(state_file, project_dir)
    result = engine.up("local", config)      # UpResult: outputs, steps, provider log
    engine.destroy("local", config)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc, resource_pb2

from kubesmith.program.automation import PROVIDER_ENV
from tests.pulumi_mocks import KubesmithMocks, ProgramRun, RecordingMonitor, run_program

DYNAMIC_TYPE_PREFIX = "pulumi-python:dynamic"
_SECRET_KEY = rpc._special_sig_key
_SECRET_SIG = rpc._special_secret_sig
#: How long the provider server may take to print its port.
_START_TIMEOUT_S = 60


class EngineError(Exception):
    """A step failed the way `pulumi up` would report it: the resource and the provider's
    message (its traceback, for a dynamic provider)."""


def is_dynamic(type_: str) -> bool:
    return type_.startswith(DYNAMIC_TYPE_PREFIX)


def _plain_value(value: struct_pb2.Value) -> struct_pb2.Value:
    """``value`` with every secret replaced by what it wraps (MarshalProperties, KeepSecrets
    false: what the engine sends a provider that did not accept secrets)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        fields = value.struct_value.fields
        if _SECRET_KEY in fields and fields[_SECRET_KEY].string_value == _SECRET_SIG:
            return _plain_value(fields["value"])
        return struct_pb2.Value(struct_value=plain(value.struct_value))
    if kind == "list_value":
        items = [_plain_value(item) for item in value.list_value.values]
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=items))
    return value


def plain(struct: struct_pb2.Struct) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    for key, value in struct.fields.items():
        result.fields[key].CopyFrom(_plain_value(value))
    return result


def _to_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def _from_json(data: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(dict(data), struct)
    return struct


def python_values(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The struct as the provider's Python code sees it."""
    return dict(rpc.deserialize_properties(struct))


class ProviderServer:
    """The SDK's dynamic provider server in its own process, and a gRPC client for it."""

    def __init__(self, project_dir: Path, echo: Callable[[str], None]) -> None:
        # What pulumi-resource-pulumi-python runs: the virtualenv's python, unbuffered.
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.dynamic", "127.0.0.1:0"],
            cwd=project_dir,
            # The environment `kubesmith up` gives the engine, which hands it to its plugins.
            env={**os.environ, **PROVIDER_ENV},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._echo = echo
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._stderr = threading.Thread(target=self._drain, args=(self.process.stderr,))
        self._stderr.start()
        port = self._read_port()
        self._stdout = threading.Thread(target=self._drain, args=(self.process.stdout,))
        self._stdout.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=_START_TIMEOUT_S)
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise EngineError(f"the dynamic provider printed no port: {line!r}; {self.log}")
        return int(line)

    def _drain(self, stream: Any) -> None:
        for line in stream:
            text = line.rstrip("\n")
            if text.strip():
                self.log.append(text)
                self._echo(text)

    def configure(self) -> None:
        """What the engine does first with any provider: CheckConfig (the dynamic provider
        does not implement it, which the engine accepts), then Configure."""
        try:
            self.stub.CheckConfig(provider_pb2.CheckRequest(urn="", olds={}, news={}))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        response = self.stub.Configure(
            provider_pb2.ConfigureRequest(
                args=struct_pb2.Struct(), acceptSecrets=True, acceptResources=True
            )
        )
        # The dynamic provider takes no secrets: every later request is sent without them.
        assert not response.acceptSecrets

    def close(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for thread in (getattr(self, "_stderr", None), getattr(self, "_stdout", None)):
            if thread is not None:
                thread.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@dataclass
class StateEntry:
    urn: str
    type: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


@dataclass(frozen=True)
class Step:
    """One thing the engine did to a dynamic resource: create, same, update, replace, delete."""

    op: str
    name: str
    type: str


@dataclass
class UpResult:
    outputs: dict[str, Any]
    steps: list[Step]
    #: The provider server's stderr lines: what `pulumi up` shows under the update.
    provider_log: list[str]
    #: Every dynamic resource's outputs after the update, by resource name.
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    run: ProgramRun | None = None

    def ops(self, op: str) -> list[str]:
        return [step.name for step in self.steps if step.op == op]


class _Update:
    """One `up` or `destroy`: the provider server, the state, the steps taken."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.old = {entry.urn: entry for entry in engine.load()}
        self.new: dict[str, StateEntry] = {}
        self.order: list[str] = []
        self.steps: list[Step] = []
        self.deleted: set[str] = set()
        self.lock = threading.Lock()
        self._server: ProviderServer | None = None

    @property
    def server(self) -> ProviderServer:
        with self.lock:
            if self._server is None:
                self._server = ProviderServer(self.engine.project_dir, self.engine.echo)
                self._server.configure()
            return self._server

    def close(self) -> list[str]:
        if self._server is None:
            return []
        self._server.close()
        return list(self._server.log)

    def _call(self, what: str, entry_name: str, method: Callable[[Any], Any], request: Any) -> Any:
        try:
            return method(request)
        except grpc.RpcError as exc:
            raise EngineError(f"{entry_name}: {what} failed: {exc.details()}") from None

    def _step(self, op: str, urn: str, type_: str) -> None:
        with self.lock:
            self.steps.append(Step(op, urn.rsplit("::", 1)[-1], type_))

    def register(self, urn: str, type_: str, inputs: struct_pb2.Struct) -> StateEntry:
        """The engine's steps for one registered dynamic resource (not a preview)."""
        stub, name = self.server.stub, urn.rsplit("::", 1)[-1]
        news = plain(inputs)
        old = self.old.get(urn)
        olds = _from_json(old.inputs) if old else struct_pb2.Struct()
        checked = self._call(
            "check", name, stub.Check, provider_pb2.CheckRequest(urn=urn, olds=olds, news=news)
        )
        if checked.failures:
            reasons = "; ".join(f"{f.property}: {f.reason}" for f in checked.failures)
            raise EngineError(f"{name}: check failed: {reasons}")
        if old is None:
            entry = self._create(urn, type_, checked.inputs)
            self._step("create", urn, type_)
        else:
            entry = self._change(old, checked.inputs)
        with self.lock:
            self.new[urn] = entry
            self.order.append(urn)
        return entry

    def _create(self, urn: str, type_: str, inputs: struct_pb2.Struct) -> StateEntry:
        created = self._call(
            "create",
            urn.rsplit("::", 1)[-1],
            self.server.stub.Create,
            provider_pb2.CreateRequest(urn=urn, properties=inputs),
        )
        return StateEntry(urn, type_, created.id, _to_json(inputs), _to_json(created.properties))

    def _change(self, old: StateEntry, inputs: struct_pb2.Struct) -> StateEntry:
        stub, name = self.server.stub, old.name
        # Diff and Update get the last outputs as olds, the last inputs beside them.
        against = {
            "id": old.id,
            "urn": old.urn,
            "olds": _from_json(old.outputs),
            "news": inputs,
            "old_inputs": _from_json(old.inputs),
        }
        diff = self._call("diff", name, stub.Diff, provider_pb2.DiffRequest(**against))
        unchanged = diff.changes == provider_pb2.DiffResponse.DIFF_NONE or (
            diff.changes == provider_pb2.DiffResponse.DIFF_UNKNOWN
            and _to_json(inputs) == old.inputs
        )
        if unchanged:
            self._step("same", old.urn, old.type)
            return StateEntry(old.urn, old.type, old.id, _to_json(inputs), old.outputs)
        if diff.replaces:
            if diff.deleteBeforeReplace:
                self._delete(old)
                entry = self._create(old.urn, old.type, inputs)
            else:
                entry = self._create(old.urn, old.type, inputs)
                self._delete(old)
            self._step("replace", old.urn, old.type)
            return entry
        updated = self._call("update", name, stub.Update, provider_pb2.UpdateRequest(**against))
        self._step("update", old.urn, old.type)
        return StateEntry(old.urn, old.type, old.id, _to_json(inputs), _to_json(updated.properties))

    def _delete(self, entry: StateEntry) -> None:
        self._call(
            "delete",
            entry.name,
            self.server.stub.Delete,
            provider_pb2.DeleteRequest(
                id=entry.id,
                urn=entry.urn,
                properties=_from_json(entry.outputs),
                old_inputs=_from_json(entry.inputs),
            ),
        )

    def delete_unregistered(self) -> None:
        """Resources of the last state the program did not register: newest first."""
        for urn in reversed(list(self.old)):
            if urn not in self.new:
                entry = self.old[urn]
                self._delete(entry)
                self.deleted.add(urn)
                self._step("delete", urn, entry.type)

    def entries(self) -> list[StateEntry]:
        """What exists now, as the engine checkpoints it (also after a failed step): old
        resources keep their place (updated, or untouched when the run stopped before them),
        new ones follow in the order they were created."""
        kept = [
            self.new.get(urn, entry) for urn, entry in self.old.items() if urn not in self.deleted
        ]
        added = [self.new[urn] for urn in self.order if urn not in self.old]
        return kept + added


class EngineMonitor(RecordingMonitor):
    """The mock monitor, except that dynamic resources go to the real provider server."""

    def __init__(self, mocks: KubesmithMocks, update: _Update) -> None:
        super().__init__(mocks)
        self.update = update

    def RegisterResource(self, request: Any) -> Any:
        if not is_dynamic(request.type):
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        entry = self.update.register(urn, request.type, request.object)
        outputs = _from_json(entry.outputs)
        self.resources[urn] = self.ResourceRegistration(urn, entry.id, python_values(outputs))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=entry.id, object=outputs)


class Engine:
    """A stack's dynamic resources, kept in ``state_file``, driven as `pulumi up` would."""

    def __init__(
        self, state_file: Path, project_dir: Path, echo: Callable[[str], None] | None = None
    ) -> None:
        self.state_file = state_file
        self.project_dir = project_dir
        self.echo = echo or (lambda line: print(line, file=sys.stderr))

    def load(self) -> list[StateEntry]:
        if not self.state_file.is_file():
            return []
        return [StateEntry(**raw) for raw in json.loads(self.state_file.read_text())]

    def save(self, entries: list[StateEntry]) -> None:
        data = [entry.__dict__ for entry in entries]
        self.state_file.write_text(json.dumps(data, indent=1, sort_keys=True))

    def up(
        self, stack: str, config: Mapping[str, Any], program: Callable[[], None] | None = None
    ) -> UpResult:
        from kubesmith import program as kubesmith_program

        update = _Update(self)
        mocks = KubesmithMocks()
        try:
            run = run_program(
                stack,
                config,
                program=program or kubesmith_program.main,
                mocks=mocks,
                monitor=EngineMonitor(mocks, update),
            )
            update.delete_unregistered()
        finally:
            self.save(update.entries())
            log = update.close()
        resources = {e.name: python_values(_from_json(e.outputs)) for e in update.entries()}
        return UpResult(run.outputs, update.steps, log, resources, run)

    def destroy(self) -> UpResult:
        """Delete every resource of the state, newest first."""
        update = _Update(self)
        remaining = list(update.old.values())
        try:
            while remaining:
                entry = remaining[-1]
                update._delete(entry)
                update._step("delete", entry.urn, entry.type)
                remaining.pop()
        finally:
            self.save(remaining)
            log = update.close()
        return UpResult({}, update.steps, log)
