"""Render deploy/nginx.conf.template and run nginx in the foreground.

    NGINX_LISTEN=0.0.0.0:5001 NGINX_UPSTREAM=127.0.0.1:5002 python deploy/nginx.py

The image (supervisord), docker-compose.yml and the tests all start nginx this way,
so they run the very same configuration. Settings (environment):
NGINX_LISTEN (default `$HOST:$PORT`, else 0.0.0.0:5001), NGINX_UPSTREAM (default
127.0.0.1:`$APP_PORT`, else 127.0.0.1:5002) and NGINX_RUN_DIR (pid file and
temporary files; default a fresh folder under the system's temporary folder).
`--render PATH` writes the configuration and exits (for `nginx -t`).
"""

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"


def settings(env: dict) -> dict:
    """The values of the template's placeholders, from the environment."""
    host, port = env.get("HOST") or "0.0.0.0", env.get("PORT") or "5001"
    listen = env.get("NGINX_LISTEN") or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    upstream = env.get("NGINX_UPSTREAM") or f"127.0.0.1:{env.get('APP_PORT') or '5002'}"
    run_dir = env.get("NGINX_RUN_DIR") or tempfile.mkdtemp(prefix="nginx-")
    return {"LISTEN": listen, "UPSTREAM": upstream, "RUN_DIR": run_dir}


def render(values: dict) -> str:
    """The template with every placeholder filled; an unknown one is an error."""

    def fill(match: re.Match) -> str:
        return values[match.group(1)]

    return re.sub(r"@([A-Z_]+)@", fill, TEMPLATE.read_text())


def main(argv: list[str]) -> None:
    values = settings(dict(os.environ))
    text = render(values)
    if argv[:1] == ["--render"]:
        Path(argv[1]).write_text(text)
        return
    run_dir = Path(values["RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    # Run as root (a test, a host install), nginx's workers are `nobody`: they must
    # reach the temporary folders it creates in here.
    run_dir.chmod(0o755)
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    os.execv(nginx, [nginx, "-p", str(run_dir), "-c", str(conf)])


if __name__ == "__main__":
    main(sys.argv[1:])
