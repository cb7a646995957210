"""``tokenrelay serve | ask | simulate``. Subcommands import what they need when they run, so
``--help`` and ``ask`` stay fast."""

from __future__ import annotations

import os
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenrelay")
def main() -> None:
    """tokenrelay: stream LLM answers token by token, with failover, limits and metering."""


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8787).")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--workers", type=int, help="Worker processes sharing the port (default 1).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(
    host: str | None,
    port: int | None,
    config: str | None,
    workers: int | None,
    log_level: str | None,
) -> None:
    """Run the gateway. With no provider keys set it runs in demo mode on built-in simulators."""
    # Options travel as environment variables so every worker process reads the same settings.
    for name, value in (
        ("HOST", host),
        ("PORT", port),
        ("WORKERS", workers),
        ("LOG_LEVEL", log_level),
    ):
        if value is not None:
            os.environ[f"TOKENRELAY_{name}"] = str(value)
    if config:
        os.environ["TOKENRELAY_CONFIG"] = os.path.abspath(config)
    _preload_in_background()
    from tokenrelay.server import run
    from tokenrelay.settings import ConfigError, load

    try:
        settings = load()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    run(settings)


def _preload_in_background() -> None:
    """Import the upstream client while the main thread imports the server: most of aiohttp's
    import is loading the CA store, which runs without the GIL, so on a second core it is off
    the start-up path (spawn to first token measured in BENCHMARKS.md)."""
    import threading

    def preload() -> None:
        import aiohttp  # noqa: F401

        import tokenrelay.dialects.anthropic
        import tokenrelay.dialects.openai  # noqa: F401

    threading.Thread(target=preload, name="preload", daemon=True).start()


@main.command()
@click.argument("prompt")
@click.option(
    "--url",
    default=lambda: os.environ.get("TOKENRELAY_URL", "http://127.0.0.1:8787"),
    show_default="$TOKENRELAY_URL or http://127.0.0.1:8787",
    help="Gateway base URL.",
)
@click.option("--route", default="default", show_default=True, help="Route to ask.")
@click.option("--max-tokens", type=int, help="Cap on the answer's length in tokens.")
@click.option("--api-key", envvar="TOKENRELAY_API_KEY", help="Gateway API key, if it needs one.")
def ask(prompt: str, url: str, route: str, max_tokens: int | None, api_key: str | None) -> None:
    """Stream an answer to PROMPT; print the stats on stderr. Ctrl-C stops the upstream too."""
    from tokenrelay.client import Client, GatewayRequestError

    client = Client(url, api_key=api_key)
    try:
        stream = client.stream(prompt, route=route, max_tokens=max_tokens)
    except GatewayRequestError as exc:
        raise click.ClickException(f"{exc.type} ({exc.status}): {exc.message}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach the gateway at {url}: {exc}") from None
    try:
        with stream:
            for text in stream.text():
                sys.stdout.write(text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        click.echo("\n[aborted: the gateway closed the upstream stream]", err=True)
        sys.exit(130)
    info = stream.info
    sys.stdout.write("\n")
    usage = info.usage
    ttft = f"{info.ttft_s * 1000:.0f} ms" if info.ttft_s is not None else "-"
    duration = f"{info.duration_s * 1000:.0f} ms" if info.duration_s is not None else "-"
    demo = " (demo simulator)" if info.demo else ""
    click.echo(
        f"provider {info.provider}{demo} · model {info.model} · first token {ttft} · "
        f"tokens in {usage.input_tokens} out {usage.output_tokens} · {duration} · "
        f"request {info.request_id}",
        err=True,
    )
    if info.error is not None:
        raise click.ClickException(
            f"the stream ended with an error: {info.error.type}: {info.error.message}"
        )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8790, show_default=True, type=int)
@click.option("--ttft-ms", type=float, help="Delay before the first token.")
@click.option("--tokens", type=int, help="Tokens per answer.")
@click.option("--token-delay-ms", type=float, help="Delay between tokens.")
@click.option("--text", help="Fixed answer text instead of the generated one.")
@click.option(
    "--fault",
    help="429, 500, 503, 529, 401, 400, error_after, error_before_content, "
    "hang_before_first_byte, hang_mid or reset.",
)
@click.option("--fault-after", type=int, help="Tokens before a mid-stream fault.")
@click.option("--retry-after", type=float, help="Seconds in retry-after on 429/529.")
@click.option("--slow-fraction", type=float, help="Share of requests (0-1) made slow, at random.")
@click.option("--slow-ttft-ms", type=float, help="Delay before the first token of a slow request.")
@click.option("--api-key", help="Require this key, as the real APIs do.")
def simulate(host: str, port: int, **knobs: object) -> None:
    """Serve wire-exact Anthropic and OpenAI APIs on loopback, with fault injection.

    Each knob can also be set per request with an x-sim-<knob> header or a ?<knob>= query."""
    from tokenrelay import simulator

    given = {name: value for name, value in knobs.items() if value is not None}
    simulator.run(simulator.SimulatorSettings(**given), host=host, port=port)  # type: ignore[arg-type]
