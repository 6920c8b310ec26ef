"""The ``cattery`` command. Each command imports its part only when it runs."""

from __future__ import annotations

from pathlib import Path

import typer

from cattery.contract import ONE_SESSION_ENV

cli = typer.Typer(
    name="cattery",
    help="Self-hosted Pipecat Cloud: run Pipecat bots as on-demand sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cattery {version('cattery')}")
        raise typer.Exit()


@cli.callback()
def _root(
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Self-hosted Pipecat Cloud."""


def _serve_epilog() -> str:
    from cattery.settings import setting_names

    return (
        "Settings come from CATTERY_* environment variables, then from cattery.toml in the "
        "current directory (./cattery.toml; lowercase names without the prefix, nested ones "
        "as tables, e.g. \\[pools] max_agents = 10); the options above win over both. State "
        "(SQLite database, secrets' key file, instance logs) is kept in CATTERY_STATE_DIR, "
        "default ./.cattery. The README's settings table says what each one does. "
        "All settings: " + ", ".join(setting_names()) + ". "
        "A lost admin token: cattery token create --admin."
    )


@cli.command()
def runtime(
    path: str = typer.Argument(..., help="A bot.py, or a folder holding one."),
    host: str | None = typer.Option(None, help="Address to bind (default 0.0.0.0)."),
    port: int | None = typer.Option(None, help="Port to bind (default $PORT or 8080)."),
    fd: int | None = typer.Option(None, hidden=True, help="Serve on an inherited socket."),
    one_session: bool = typer.Option(
        False,
        "--one-session",
        envvar=ONE_SESSION_ENV,
        help="Exit once the first session has ended.",
    ),
    parent_pid: int | None = typer.Option(
        None, hidden=True, help="Exit when this process is gone and no session runs."
    ),
) -> None:
    """Serve one bot.py behind the pipecat-base HTTP contract."""
    from cattery.runtime.main import run_runtime

    run_runtime(path, host=host, port=port, fd=fd, one_session=one_session, parent_pid=parent_pid)


@cli.command(epilog=_serve_epilog())
def serve(
    host: str | None = typer.Option(
        None, help="Address to bind (default 127.0.0.1; CATTERY_HOST)."
    ),
    port: int | None = typer.Option(None, help="Port to bind (default 7870; CATTERY_PORT)."),
    fd: int | None = typer.Option(None, hidden=True, help="Serve on an inherited socket."),
    agent: list[str] = typer.Option(
        [], "--agent", help="Deploy NAME=PATH (a folder holding bot.py) at start; repeatable."
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Run instances on a Ray cluster: its HOST:PORT, or auto for a head started "
        "here (CATTERY_RAY__ADDRESS).",
    ),
) -> None:
    """Run the control plane: Pipecat Cloud's API over local pools of instances."""
    from cattery.control.main import run_control_plane

    run_control_plane(host=host, port=port, fd=fd, agents=agent, ray=ray)


@cli.command()
def dev(
    path: str = typer.Argument(..., help="A folder holding bot.py, or that bot.py."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(7860, help="Port to bind."),
    transport: str | None = typer.Option(
        None,
        "--transport",
        "-t",
        help="The only transport POST /start takes (its default), and the carrier "
        "(twilio, telnyx, plivo) whose call webhook POST / answers.",
    ),
    proxy: str | None = typer.Option(
        None,
        "--proxy",
        "-x",
        help="Public host (no scheme) that reaches this machine, for telephony webhooks.",
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where state is kept (default ./.cattery-dev)."
    ),
    fd: int | None = typer.Option(None, hidden=True, help="Serve on an inherited socket."),
) -> None:
    """Develop a bot: the control plane with PATH deployed, the prebuilt client at /client."""
    from cattery.control.dev.main import run_dev

    run_dev(
        path,
        host=host,
        port=port,
        transport=transport,
        proxy=proxy,
        state_dir=state_dir,
        fd=fd,
    )


token = typer.Typer(help="Admin tokens of a state folder.", no_args_is_help=True)
cli.add_typer(token, name="token")


@token.command("create")
def token_create(
    admin: bool = typer.Option(
        False, "--admin", help="An admin token (the only kind made here; required)."
    ),
    name: str = typer.Option("admin", help="The token's name, as API key lists show it."),
) -> None:
    """Make a new admin token in the state `cattery serve` run with the same settings (and
    directory) uses, and print it once: for a lost one. Public and private keys come from
    `pipecat cloud organizations keys create`."""
    if not admin:
        raise typer.BadParameter("only admin tokens are made here: add --admin", param_hint="")
    from cattery.control.tokens import create_admin_token
    from cattery.settings import Settings

    settings = Settings()
    raw = create_admin_token(settings, name)
    typer.echo(f"admin token for {settings.state_dir} (shown once; store it now):")
    typer.echo(raw)


node = typer.Typer(help="This machine as a node of a cattery cluster.", no_args_is_help=True)
cli.add_typer(node, name="node")


@node.command("join", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def node_join(
    ctx: typer.Context,
    control: str = typer.Option(
        ..., "--control", help="The control plane's URL, e.g. http://10.0.0.5:7870."
    ),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="CATTERY_ENROLL_TOKEN",
        help="A one-time token from `pipecat cloud regions enroll-token REGION`.",
    ),
) -> None:
    """Join the cluster as a node of the token's region: trade the token for the cluster's
    address and Ray token, then run `ray start --address ... --labels cattery-region=...`.
    Further options (e.g. --node-ip-address 10.0.0.6, --num-cpus 4) go to `ray start`."""
    import subprocess

    from cattery.node import (
        JoinRefused,
        fetch_join_details,
        ray_executable,
        ray_start_command,
        ray_start_env,
    )

    try:
        ray = ray_executable()
        details = fetch_join_details(control, token)
    except JoinRefused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Joining {details.ray_address} in region {details.region}")
    command = ray_start_command(details, ctx.args, ray=ray)
    raise typer.Exit(subprocess.run(command, env=ray_start_env(details)).returncode)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
