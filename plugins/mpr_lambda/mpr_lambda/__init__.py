"""MPR plugin: executor ``lambda`` (AWS Step Functions + Lambda; see ``deploy/aws``)."""

from __future__ import annotations

from mpr import hookimpl


@hookimpl
def register_executors(register):
    """Register :class:`~mpr_lambda.executor.LambdaExecutor` as ``lambda``."""
    from mpr_lambda.executor import LambdaExecutor

    register("lambda", LambdaExecutor)


@hookimpl
def register_commands(cli):
    """``mpr lambda-poll``: catch executions that ended without calling back."""
    from mpr_lambda.commands import poll_command

    cli.add_command(poll_command)
