"""The `accel` command: parsing and printing only; the work is elsewhere."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__, control, doctor, kernel
from .errors import AccelError, NotRootError, SettingsError
from .settings import DEFAULT_PIN_DIR, DEFAULT_STATE_DIR, Settings

out = Console(highlight=False, soft_wrap=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AccelError as exc:
            click.echo(f"accel: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except PermissionError as exc:
            click.echo(f"accel: {exc.strerror or exc}: {exc.filename or ''} - run as root", err=True)
            sys.exit(NotRootError.exit_code)
        except Exception as exc:  # a bug: still one line, and how to report it
            click.echo(f"accel: internal error: {type(exc).__name__}: {exc} (please report it with `accel doctor` output)", err=True)
            sys.exit(70)

    return wrapper


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base = dict(ctx.obj)
    base.update({k: v for k, v in overrides.items() if v is not None or k == "metrics_address"})
    return Settings(**base)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="accel")
@click.option("--pin-dir", default=DEFAULT_PIN_DIR, show_default=True, envvar="ACCEL_PIN_DIR", help="bpffs directory of this instance's pinned maps.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, envvar="ACCEL_STATE_DIR", help="Directory for the run lock and state file.")
@click.pass_context
def main(ctx: click.Context, pin_dir: str, state_dir: str) -> None:
    """Socket-level TCP acceleration for processes on the same node."""
    ctx.obj = {"pin_dir": pin_dir, "state_dir": state_dir}


def _settings_or_exit(ctx: click.Context, **overrides: Any) -> Settings:
    try:
        return _settings(ctx, **overrides)
    except SettingsError as exc:
        click.echo(f"accel: {exc}", err=True)
        sys.exit(exc.exit_code)


@main.command()
@click.option("--cgroup", type=str, default=None, help="cgroup-v2 directory to accelerate (default: the cgroup-v2 root, i.e. the whole node).")
@click.option("--log-format", type=click.Choice(["console", "json"]), default=Settings.log_format, show_default=True, envvar="ACCEL_LOG_FORMAT")
@click.option(
    "--sockhash-size",
    type=int,
    default=Settings.sockhash_size,
    show_default=True,
    envvar="ACCEL_SOCKHASH_SIZE",
    help="Max sockets in the fast path (fixed when first pinned).",
)
@click.option(
    "--endpoints-size",
    type=int,
    default=Settings.endpoints_size,
    show_default=True,
    envvar="ACCEL_ENDPOINTS_SIZE",
    help="Max local endpoint addresses (fixed when first pinned).",
)
@click.option("--rescan-interval", type=float, default=Settings.rescan_interval, show_default=True, help="Seconds between scans for new network namespaces.")
@click.option(
    "--node-tcp-budget",
    type=int,
    default=Settings.node_tcp_budget,
    envvar="ACCEL_NODE_TCP_BUDGET",
    help="Bytes of node TCP memory past which senders to receivers that hold data wait on TCP [0: the kernel's pressure threshold, tcp_mem].",
)
@click.option(
    "--flow-growth-cap",
    type=float,
    default=Settings.flow_growth_cap,
    show_default=True,
    envvar="ACCEL_FLOW_GROWTH_CAP",
    help="How far a sender may get ahead of a reader that keeps reading, in multiples of TCP's autotuning maximum (tcp_rmem + tcp_wmem max).",
)
@click.option(
    "--small-write-fallback/--no-small-write-fallback",
    default=Settings.small_write_fallback,
    show_default=True,
    envvar="ACCEL_SMALL_WRITE_FALLBACK",
    help="Move a socket that streams small writes to TCP, which coalesces them (faster there).",
)
@click.option(
    "--small-write-local",
    type=int,
    default=Settings.small_write_local,
    show_default=True,
    envvar="ACCEL_SMALL_WRITE_LOCAL",
    help="Bytes below which a write counts as small on loopback (one network namespace); measure this node's with `python -m benchmarks.crossover`.",
)
@click.option(
    "--small-write-remote",
    type=int,
    default=Settings.small_write_remote,
    show_default=True,
    envvar="ACCEL_SMALL_WRITE_REMOTE",
    help="The same between network namespaces (pods).",
)
@click.option(
    "--release/--no-release",
    default=Settings.release,
    show_default=True,
    envvar="ACCEL_RELEASE",
    help="Take connections that moved to TCP for good out of the fast path once no byte can be lost (they then cost what TCP costs).",
)
@click.option(
    "--release-grace",
    type=float,
    default=Settings.release_grace,
    show_default=True,
    hidden=True,
    help="Seconds between marking a connection retiring and releasing it.",
)
@click.option(
    "--budget-interval", type=float, default=Settings.budget_interval, show_default=True, hidden=True, help="Seconds between reads of node TCP memory."
)
@click.option(
    "--kubernetes/--no-kubernetes",
    default=None,
    help="Take pod IPs and opt-outs from the Kubernetes API (default: on when running in a pod with a service account).",
)
@click.option("--kubeconfig", type=str, default=None, envvar="KUBECONFIG", help="kubeconfig file (default: in-cluster config).")
@click.option("--node-name", type=str, default=None, envvar="NODE_NAME", help="This node's name (Kubernetes mode; downward API).")
@click.option(
    "--metrics-address",
    type=str,
    default=Settings.metrics_address,
    show_default=True,
    envvar="ACCEL_METRICS_ADDRESS",
    help="HOST:PORT for /metrics, /healthz, /readyz; 'off' disables.",
)
@click.option("--watch-timeout", type=int, default=Settings.watch_timeout, hidden=True, help="Seconds before the API server ends a watch.")
@click.option("--bpf-define", "defines", multiple=True, hidden=True, help="Extra -D for the BPF build (tests).")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF C sources and exit.")
@click.pass_context
@friendly
def run(
    ctx: click.Context,
    cgroup: str | None,
    log_format: str,
    sockhash_size: int,
    endpoints_size: int,
    rescan_interval: float,
    node_tcp_budget: int,
    budget_interval: float,
    flow_growth_cap: float,
    small_write_fallback: bool,
    small_write_local: int,
    small_write_remote: int,
    release: bool,
    release_grace: float,
    kubernetes: bool | None,
    kubeconfig: str | None,
    node_name: str | None,
    metrics_address: str,
    watch_timeout: int,
    defines: tuple[str, ...],
    ebpf: bool,
) -> None:
    """Load, attach and keep the datapath fed, in the foreground."""
    if ebpf:
        from .programs import bpf_sources

        for name, path in bpf_sources().items():
            click.echo(f"// ---- {name} ({path})")
            with open(path) as f:
                click.echo(f.read())
        return
    settings = _settings(
        ctx,
        cgroup=cgroup,
        log_format=log_format,
        sockhash_size=sockhash_size,
        endpoints_size=endpoints_size,
        rescan_interval=rescan_interval,
        node_tcp_budget=node_tcp_budget,
        budget_interval=budget_interval,
        flow_growth_cap=flow_growth_cap,
        small_write_fallback=small_write_fallback,
        small_write_local=small_write_local,
        small_write_remote=small_write_remote,
        release=release,
        release_grace=release_grace,
        extra_cflags=tuple(f"-D{d}" for d in defines),
        kubernetes=_kubernetes_mode(kubernetes),
        kubeconfig=kubeconfig,
        node_name=node_name,
        metrics_address=None if metrics_address in ("", "off") else metrics_address,
        watch_timeout=watch_timeout,
    )
    from .agent import run as agent_run

    sys.exit(agent_run(settings))


def _kubernetes_mode(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    from .endpoints.kube import in_cluster

    return in_cluster()


def _rows(checks: list[doctor.Check]) -> list[tuple[str, str, str, str]]:
    def result(c: doctor.Check) -> str:
        return "[red]FAIL[/]" if not c.ok else "[yellow]warn[/]" if c.warning else "[green]pass[/]"

    return [(c.name, result(c), c.detail, c.fix) for c in checks]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def status(ctx: click.Context, as_json: bool) -> None:
    """Attached or not, sockets in the fast path, and every counter."""
    settings = _settings_or_exit(ctx)
    kernel.require_root("accel status (the pins are root-only)")
    info = control.status(settings)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    state = "[green]attached[/]" if info["attached"] else "[yellow]not attached[/]"
    pins = settings.pin_dir if info["pinned"] else f"{settings.pin_dir} (none)"
    out.print(f"accel {__version__}: {state} to cgroup {info['cgroup'] or '-'}  (kernel {info['kernel']}, pins {pins})")
    if info["running_pid"]:
        out.print(f"controller pid {info['running_pid']}")
    retired = f" (+{info['retired_sockets']} in an older version's map)" if info["retired_sockets"] else ""
    out.print(f"sockets in the fast path: {info['sockets']}{retired}   local endpoints: {info['endpoints']} {info['endpoints_by_policy'] or ''}")
    if info["pinned"]:
        small = info.get("small_writes")
        if not small:
            rule = "not recorded (the last run was an older version)"
        elif small["rule"] == "on":
            rule = f"streams of writes below {small['local']:,} B on loopback, {small['remote']:,} B between namespaces move to TCP"
        else:
            rule = "off"
        out.print(f"small-write rule: {rule}")
    table = Table(title=None, show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name in info["counters"]:
        table.add_row(name, f"{info[name]:,}")
    out.print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def conns(ctx: click.Context, as_json: bool) -> None:
    """The accelerated connections: both ends, the netns of loopback ones, and
    each end's path (redirect, wait on TCP, TCP for good and why), its waits
    and returns; released connections (plain TCP now, still open) last."""
    settings = _settings_or_exit(ctx)
    kernel.require_root("accel conns (the pins are root-only)")
    model = control.connections(settings)
    rows = model["connections"]
    if as_json:
        click.echo(json.dumps(model, indent=2))
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("end A", "end B", "netns", "both ends", "A sends by", "B sends by"):
        table.add_column(col)
    for r in rows:
        both = "released" if r["released"] else ("yes" if r["both_ends_accelerated"] else "no")
        table.add_row(r["a"], r["b"], r["netns"] or "(by address)", both, _path_text(r["a_path"]), _path_text(r["b_path"]))
    out.print(table)
    out.print(f"{len(rows)} connections ({model['released']} released), {model['sockets']} sockets in the fast path")


def _path_text(path: dict) -> str:
    """``redirect``, ``wait 0.2 s``, ``tcp (small_writes)``, and the waits
    and returns behind them: one cell of `accel conns`."""
    mode = path["mode"]
    if mode == "tcp":
        text = f"tcp ({path['reason']})" if path["reason"] else "tcp"
    elif mode == "wait" and path["since_s"] is not None:
        text = f"wait {path['since_s']:.1f} s"
    else:
        text = mode
    if path["waits"]:
        text += f"; {path['waits']} waits, {path['returns']} back after {path['waited_s']:.3f} s"
    return text


@main.command()
@click.option("--force", is_flag=True, help="Remove the pins even while connections use them (purges their unread bytes).")
@click.option("--wait", "wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for open connections to close.")
@click.option("--cgroup", type=str, default=None, help="cgroup to detach from, if the state file is gone.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def down(ctx: click.Context, force: bool, wait_s: float, cgroup: str | None, as_json: bool) -> None:
    """Stop accelerating new connections; remove the pins once it is safe.

    Exit code 0: everything removed; 3: connections still open, pins kept."""
    settings = _settings_or_exit(ctx)
    kernel.require_root("accel down")
    result = control.down(settings, force=force, wait_s=wait_s, cgroup=cgroup)
    _print_down(result, as_json, settings)
    if not result["removed"]:
        sys.exit(3)


def _print_down(result: dict[str, Any], as_json: bool, settings: Settings) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if result["stopped_pid"]:
        out.print(f"stopped accel run (pid {result['stopped_pid']})")
    if result["detached"]:
        out.print(f"detached sockops program(s) {result['detached']}")
    if result["removed"]:
        forced = " (forced: unread redirected bytes of open connections were purged)" if result["remaining_sockets"] else ""
        out.print(f"removed {settings.pin_dir}{forced}; nothing of accel is left attached")
    else:
        out.print(
            f"{result['remaining_sockets']} sockets still use the fast path; pins kept at {settings.pin_dir} so none of their bytes are lost. "
            "New connections are no longer accelerated. Run `accel down` again once they close (or --wait SECONDS, or --force)."
        )


@main.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--live",
    is_flag=True,
    help="Also run the real datapath end to end on a scratch cgroup holding only this process (about 10 s), and report which kernel limits apply.",
)
@click.option("--live-parent", type=str, default=None, hidden=True, help="cgroup-v2 directory to make the scratch cgroup in (tests).")
@friendly
def doctor_cmd(as_json: bool, live: bool, live_parent: str | None) -> None:
    """Check every requirement; print the fix for each failure. Read-only
    unless --live."""
    checks = doctor.run_checks()
    if live:
        if all(c.ok for c in checks):
            from . import selftest  # loads bcc; plain doctor works without it

            checks += selftest.run_live(live_parent)
        else:
            checks.append(doctor.Check("live: datapath", False, "not run", "fix the failures above first"))
    if as_json:
        click.echo(json.dumps(doctor.as_json(checks), indent=2))
    else:
        table = Table(show_header=True, header_style="bold")
        for col in ("check", "result", "detail", "fix"):
            table.add_column(col)
        for row in _rows(checks):
            table.add_row(*row)
        out.print(table)
    if not all(c.ok for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
