"""CLI subcommands of the web stage: `deepdive serve` and `deepdive report` (registered by deepdive/cli.py)."""
from deepdive.paths import DEFAULT_WORKSPACE

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers):
    p = subparsers.add_parser("serve", help="browse the workspace's runs in a local web dashboard",
                              description="Serve the dashboard over the run store (binds 127.0.0.1 unless --host).")
    p.add_argument("workspace", nargs="?", default=None, help="workspace folder (default: runs)")
    # Every other command takes --workspace: so does this one, beside the positional form.
    p.add_argument("--workspace", dest="workspace_option", metavar="WORKSPACE", default=None,
                   help="the same, as the other commands take it")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.set_defaults(func=serve)

    r = subparsers.add_parser("report", help="write a run's deep dive as one self-contained HTML file",
                              description="The dashboard's views of one analysed run in a single HTML file that "
                                          "opens from disk with no network access.")
    r.add_argument("run", help="run id, unique id prefix, name, or 'latest'")
    r.add_argument("--out", default="report.html", help="output file (default: report.html)")
    r.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="workspace folder (default: runs)")
    r.add_argument("--split", default="test", help="analysed split to report (default: test)")
    r.set_defaults(func=report)


def serve(args) -> int:
    from deepdive.malloc import keep_freed_memory_in_threads

    keep_freed_memory_in_threads()    # first: glibc fixes its arena limit once a second thread has allocated
    import uvicorn

    from deepdive.errors import DeepdiveError
    from deepdive.web.app import create_app

    if args.workspace and args.workspace_option and args.workspace != args.workspace_option:
        raise DeepdiveError(f"two workspaces given ({args.workspace} and --workspace {args.workspace_option}); "
                            "give one")
    app = create_app(args.workspace_option or args.workspace or DEFAULT_WORKSPACE)
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}: anyone who can reach this machine can browse the runs")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"deepdive dashboard for {app.state.store.workspace} at http://{shown}:{args.port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def report(args) -> int:
    from deepdive.web.report import build_report

    info = build_report(args.workspace, args.run, split=args.split, out=args.out)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB) for run {info['run_id']}, {args.split} split: "
          f"saliency maps of {info['saliency_errors']} of {info['errors']} analysed errors, activations of "
          f"{info['activation_images']} images, nearest training images of {info['neighbour_rows']}; open it in a "
          "browser, no server needed")
    return 0
