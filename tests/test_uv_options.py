"""``scripts/uv_options.py``: pip's configuration as uv options (setup.sh installs with them)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "uv_options.py"


def test_pip_config_becomes_the_same_uv_options():
    spec = importlib.util.spec_from_file_location("uv_options", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = (
        ":env:.find-links='/opt/wheels'\n"
        "global.constraint='/etc/c.txt'\n"
        "global.extra-index-url='file:///a/simple file:///b/simple'\n"
        "global.find-links='/opt/wheels'\n"
        "global.cert='/etc/ssl/ca.crt'\n"
    )
    assert module.uv_options(config) == [
        "--constraint=/etc/c.txt",
        "--extra-index-url=file:///a/simple",
        "--extra-index-url=file:///b/simple",
        "--find-links=/opt/wheels",
    ]
    assert module.uv_options("") == []
