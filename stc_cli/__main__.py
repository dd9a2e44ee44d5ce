"""``python -m stc_cli ...`` (and ``torchrun ... -m stc_cli eval ...``) run the ``stc`` command."""

from stc_cli.cli import app

app(prog_name="stc")
