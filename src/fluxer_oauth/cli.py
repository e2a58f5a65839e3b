"""The fluxer-oauth command: serve, migrate, demo (and operator tools)."""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.console import Console

from fluxer_oauth.settings import ConfigurationError, Settings

app = typer.Typer(help="Fluxer OAuth2 server", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.secret  # noqa: B018  (fails early without a key outside dev mode)
        return settings
    except (ConfigurationError, ValueError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2)


async def _migrate(settings: Settings) -> None:
    from fluxer_oauth.store.database import Database
    from fluxer_oauth.store.migrate import migrate

    db = Database(settings.sqlalchemy_url)
    try:
        await migrate(db.engine)
    finally:
        await db.close()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    asyncio.run(_migrate(settings))
    console.print("[green]schema is up to date[/green]")


@app.command()
def demo() -> None:
    """Load demo data (idempotent) and print the demo login and an authorize URL."""
    from fluxer_oauth.platform.demo import load_demo
    from fluxer_oauth.runtime import Runtime

    settings = _settings()

    async def run():
        await _migrate(settings)
        rt = Runtime.create(settings)
        try:
            return await load_demo(rt)
        finally:
            await rt.db.close()

    info = asyncio.run(run())
    print(f"Demo login:      {info.login} / {info.password}")
    print(f"Demo client_id:  {info.client_id}")
    print(f"Demo secret:     {info.client_secret}")
    print(f"Redirect URI:    {info.redirect_uri}")
    print(f"Open this URL:   {info.authorize_url}")
    sys.stdout.flush()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="port to listen on"),
    workers: int = typer.Option(1, min=1, max=64, help="worker processes"),
) -> None:
    """Serve the API and pages with granian."""
    from granian import Granian
    from granian.constants import Interfaces

    _settings()
    console.print(f"serving on http://{host}:{port} with {workers} worker(s)")
    Granian(
        "fluxer_oauth.app:create_app", address=host, port=port, interface=Interfaces.ASGI,
        workers=workers, factory=True, log_access=False,
    ).serve()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
