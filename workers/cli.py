"""The ``qat`` command: one entry point for the library, the service and its workers.

Subcommands are imported only when invoked (or listed in ``--help``), so ``qat admin``
and ``qat db`` run on hosts without torch and ``qat quantize`` pays for torch alone.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of its click command
COMMANDS = {
    "admin": "service.ops.cli:admin",
    "db": "service.ops.cli:db",
    "dispatcher": "workers.commands:dispatcher",
    "quantize": "quantlib.cli:quantize",
    "serve": "service.ops.cli:serve",
    "worker": "workers.commands:worker",
    # the client: talks to a running service over HTTP, needs neither torch nor a database
    "submit": "service.client.cli:submit",
    "status": "service.client.cli:status",
    "list": "service.client.cli:list_jobs",
    "wait": "service.client.cli:wait",
    "cancel": "service.client.cli:cancel",
    "delete": "service.client.cli:delete",
    "download": "service.client.cli:download",
    "logs": "service.client.cli:logs",
    "report": "service.client.cli:report",
    "upload-dataset": "service.client.cli:upload_dataset",
    "demo": "workers.demo:demo",
}


class LazyGroup(click.Group):
    """A group that resolves its commands from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Quantization-aware training: FP32 PyTorch models in, INT8 ONNX models out."""


if __name__ == "__main__":
    main()
