"""The `lethe` group every command attaches itself to, and how it runs them."""

from __future__ import annotations

import gc

import click


class _Lethe(click.Group):
    """Settings read late (the broker's, when a command first reaches the queue) are
    refused as the others are: one line that names the setting, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from worker.settings import SettingsError

        # What the imports made (modules, classes, functions: no connection, no file) is
        # set aside from the collector, whose passes over it, and its last one at exit,
        # were a third of a short command. What the command makes is still collected.
        gc.freeze()
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Lethe)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: the processing register enforces its own retention periods."""
