"""The entry point tempest loads (``tempest.test_plugins``)."""

from pathlib import Path
from typing import Any

from oslo_config import cfg
from tempest import config as tempest_config
from tempest.test_discover import plugins

from asyncopy_tempest import config

PACKAGE = Path(__file__).resolve().parent


class AsyncopyTempestPlugin(plugins.TempestPlugin):  # type: ignore[misc]
    """Registers ``[asyncopy]`` and the migration tests."""

    def load_tests(self) -> tuple[str, str]:
        return str(PACKAGE), str(PACKAGE.parent)

    def register_opts(self, conf: Any) -> None:
        tempest_config.register_opt_group(conf, config.GROUP, config.OPTS)

    def get_opt_lists(self) -> list[tuple[str, list[cfg.Opt]]]:
        return [(config.GROUP.name, config.OPTS)]
